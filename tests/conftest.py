"""Shared fixtures: one local Spark session for the whole run, the shared Fruits-360 sample and weights, and small
image folders made from them (never copied into the repository)."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared").resolve()
FRUITS_360 = SHARED / "data" / "fruits-360"
WEIGHTS = SHARED / "models" / "mobilenet_v2_0.35_224_no_top.h5"

# Before anything imports the definitions: the offline weights, and Spark's Python workers on this interpreter.
os.environ.setdefault("FRUITS_MODEL_WEIGHTS", str(WEIGHTS))
os.environ.setdefault("FRUITS_MODEL_ALPHA", "0.35")
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One classifier penalty, fitted without a search, for the main-job runs of the tests: on a few photos the search
# (six fits besides the refit, each L-BFGS iteration a Spark job) was a third of a run. The search itself is tested
# where it lives (tests/spark_code/models/test_classifier.py) and end to end by the tests that ask for
# `default_penalties`.
PENALTIES_ENV = "FRUITS_CLASSIFIER_PENALTIES"
os.environ.setdefault(PENALTIES_ENV, "1e-4")


def _temporary_files_in_memory(shm: Path = Path("/dev/shm"), needed: int = 4 << 30) -> None:
    """The tests' temporary folders (pytest's tmp_path, DAGSTER_HOME, their subprocesses' TMPDIR) on the machine's
    RAM-backed file system where it has one with room, unless TMPDIR names a folder: the runs' many small writes and
    SQLite's syncs of Dagster's event log took ~7% longer on this machine's disk."""
    if os.environ.get("TMPDIR") or not shm.is_dir() or shutil.disk_usage(shm).free < needed:
        return
    folder = shm / f"fruits-tests-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None  # computed again from TMPDIR


_temporary_files_in_memory()
# `fruits run` records its runs in DAGSTER_HOME: the tests' own instance, never the developer's ./.dagster_home.
os.environ["DAGSTER_HOME"] = tempfile.mkdtemp(prefix="fruits-tests-dagster-home-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ["DAGSTER_HOME"], ignore_errors=True)


from pyspark.sql import SparkSession  # noqa: E402

from spark_code.settings import ModelSettings, one_blas_thread_here, s3a_conf, spark_conf  # noqa: E402

REAL_CLASSES = ["Apple Braeburn", "Banana", "Kiwi"]
REPO = Path(__file__).resolve().parents[1]


SHORT_LIVED_JVM = ("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1")
"""The JVMs the tests start in other processes (`fruits run`, drivers, benches) live for a run on a few photos: with
the JIT's first tier only they start faster (a cold `fruits run` on 3 classes of 10 photos: 34-35 s against 39-43 s).
This process's JVM lives through the whole run and keeps every tier (the `spark` fixture starts it without this):
there the first tier alone made the in-process main-job tests slower (175 s against 165 s)."""
os.environ.setdefault(*SHORT_LIVED_JVM)

INTERPRETED_SQL = (
    "PYSPARK_SUBMIT_ARGS",
    "--conf spark.sql.codegen.wholeStage=false --conf spark.sql.codegen.factoryMode=NO_CODEGEN pyspark-shell",
)
"""Every session the tests start (this process's and their drivers') evaluates Spark SQL's expressions without
compiling code for them: the tests' queries each see a few rows, and compiling the generated Java for each new query
(Delta's log replays, the writes, the joins) was 12% of the JVM's samples in `test_assets.py`, which took 117 / 128 s
interpreted against 141 / 160 s compiled (alternated). The product's sessions keep Spark's code generation."""
os.environ.setdefault(*INTERPRETED_SQL)

SLOW_FIXTURES = {"spark", "trained_run", "cluster", "aws_server"}
"""Fixtures that start Spark, train a model, start a cluster or an S3 server: a test using one is `slow`, left out of
`make check`'s fast tier."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def driver_command(
    images_root: Path, output_root: Path, classes: list[str], *assets: str, hang_after: tuple[str, Path] | None = None
) -> list[str]:
    """`tests/materialize_driver.py` as a command: a Spark driver in its own process (run it with cwd=REPO)."""
    command = [sys.executable, "-m", "tests.materialize_driver", str(images_root), str(output_root), *classes]
    command += ["--assets", *assets] if assets else []
    return command + (["--hang-after-publishing", hang_after[0], str(hang_after[1])] if hang_after else [])


@pytest.fixture(scope="session")
def shared_root() -> Path:
    if not (FRUITS_360 / "Training").is_dir() or not WEIGHTS.is_file():
        pytest.fail(f"the shared sample and weights must be at {SHARED}, beside the repository (see the README)")
    return FRUITS_360


@pytest.fixture(scope="session")
def model_settings() -> ModelSettings:
    return ModelSettings(weights=str(WEIGHTS), alpha=0.35)


TEST_MASTER = "local[2]"
"""The in-process session's master: two cores, as on this machine and CI's."""


def _reaching_moto(endpoint: str) -> dict[str, str]:
    """The tests' session's way to moto's S3, set as its JVM starts: Spark through S3A (`s3a_conf`, with the test
    keys), and the environment of its Python workers, whose pyarrow reads photos there (their daemon keeps the
    environment it starts with, before any test's `aws` fixture)."""
    env = _moto_environment(endpoint)
    return {
        **s3a_conf(env),
        "spark.hadoop.fs.s3a.access.key": AWS_TEST_KEYS["AWS_ACCESS_KEY_ID"],
        "spark.hadoop.fs.s3a.secret.key": AWS_TEST_KEYS["AWS_SECRET_ACCESS_KEY"],
        "spark.hadoop.fs.s3.impl.disable.cache": "true",  # moto starts empty in each test
        **{f"spark.executorEnv.{name}": value for name, value in env.items()},
    }


@pytest.fixture(scope="session")
def spark(aws_server: str) -> SparkSession:
    """The one Spark session of the test run; Dagster's LazyPySparkResource picks it up through getOrCreate. It
    reaches moto's S3 as a session started in the `aws` fixture's environment would."""
    one_blas_thread_here()  # as fruits_assets.defs.resources.local_spark does before its JVM starts
    builder = SparkSession.builder.master(TEST_MASTER).appName("fruits-tests")
    for key, value in {
        **spark_conf(master=TEST_MASTER),
        **_reaching_moto(aws_server),
        # One JVM holds every test's tables and caches for the whole run: Spark's default 1g ran out of heap in the
        # last minutes of a clean-clone run (in a PCA's SVD), and Delta keeps the log state of up to 10,000 tables
        # it read (hundreds of test tables) for an hour unless told otherwise. With 3g and the bound the clean-clone
        # suite took 894 s (959 s before: less collecting near the limit, and this machine's variance); 4g, 970 s.
        "spark.driver.memory": "3g",
        "spark.databricks.delta.delta.log.cacheSize": "64",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
    }.items():
        builder = builder.config(key, value)
    name, value = SHORT_LIVED_JVM
    short_lived = os.environ.get(name) == value
    if short_lived:
        del os.environ[name]
    try:
        session = builder.getOrCreate()
    finally:
        if short_lived:
            os.environ[name] = value
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session", autouse=True)
def _long_lived_jvm_first(request: pytest.FixtureRequest) -> None:
    """With slow tests to run, this process's JVM comes from the `spark` fixture before any other session fixture
    (e.g. `trained_run`, whose `fruits run` would otherwise launch it with SHORT_LIVED_JVM's setting)."""
    if any(item.get_closest_marker("slow") for item in request.session.items):
        request.getfixturevalue("spark")


def copy_sample(source: Path, target: Path, classes: list[str], per_split: dict[str, int]) -> Path:
    """A small images root with the first N images of each class and split of the shared sample."""
    for split, count in per_split.items():
        for name in classes:
            folder = target / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for image in sorted((source / split / name).iterdir())[:count]:
                shutil.copy(image, folder / image.name)
    return target


@pytest.fixture(scope="session")
def small_root(shared_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real classes, 10 training and 4 test images each."""
    return copy_sample(shared_root, tmp_path_factory.mktemp("small"), REAL_CLASSES, {"Training": 10, "Test": 4})


@pytest.fixture(scope="session")
def trained_run(small_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The main job (`fruits run --json`) once on the small root: its summary and output root."""
    import contextlib
    import io
    import json

    from fruits_assets.cli import main

    output_root = tmp_path_factory.mktemp("trained") / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["run", "--images-root", str(small_root), "--output-root", str(output_root), "--json"])
    summary = json.loads(stdout.getvalue())
    assert code == 0, summary
    return summary, output_root


@pytest.fixture
def default_penalties(monkeypatch: pytest.MonkeyPatch) -> None:
    """The classifier's default candidate penalties and their search, for a test that runs the main job."""
    monkeypatch.delenv(PENALTIES_ENV, raising=False)


@pytest.fixture
def trained_copy(trained_run: tuple[dict, Path], tmp_path: Path) -> Path:
    """A copy of the trained run's output root that a test may run the main job on again (images: `small_root`):
    only what the test's settings make stale is recomputed."""
    return Path(shutil.copytree(trained_run[1], tmp_path / "trained"))


@pytest.fixture(scope="session")
def aws_server() -> str:
    """moto in server mode on 127.0.0.1: real HTTP S3, EMR, IAM and STS APIs that boto3 reaches by its endpoint."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"  # AWS's own policies, e.g. AmazonEMRServicePolicy_v2
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


AWS_TEST_KEYS = {
    "AWS_ACCESS_KEY_ID": "fruits-test-access-key-id",
    "AWS_SECRET_ACCESS_KEY": "fruits-test-secret-0123456789",
}
"""Distinctive fake credentials: a test can grep logs and metadata for them."""
AWS_TEST_REGION = "eu-west-1"


def _moto_environment(endpoint: str) -> dict[str, str]:
    """What an AWS client needs to talk to moto's server: its endpoint, the test region and keys."""
    where = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": AWS_TEST_REGION, "AWS_DEFAULT_REGION": AWS_TEST_REGION}
    return where | AWS_TEST_KEYS


@pytest.fixture
def aws(aws_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """boto3 in this test (and its subprocesses) talks to the loopback server, which starts empty."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{aws_server}/moto-api/reset", method="POST")).close()
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for name, value in _moto_environment(aws_server).items():
        monkeypatch.setenv(name, value)
    return aws_server


def numpy_pca_k(features: np.ndarray, target_variance: float, max_k: int = 1280) -> tuple[int, float]:
    """The k a variance target implies and the variance it explains, computed with NumPy alone (an SVD of the
    centered rows), independently of the Spark PCA under test."""
    centered = features - features.mean(axis=0)
    variance = np.linalg.svd(centered.astype(np.float64), compute_uv=False) ** 2
    cumulative = np.cumsum(variance) / variance.sum()
    k = min(int(np.argmax(cumulative >= target_variance - 1e-9)) + 1, max_k, len(features) - 1)
    return k, float(cumulative[k - 1])
