"""The production path without AWS: a `DAGSTER_DEPLOYMENT=prod` run launches its step through dagster-aws's real
`emr_pyspark_step_launcher` against moto's S3/EMR server on loopback, and this test plays the EMR cluster.

moto accepts steps but never runs them. The test does what EMR would: it reads the step's spark-submit arguments,
fetches the staged files from S3, runs the staged entry point (`emr_step_main.py`) with spark-submit on local
Spark, with the driver environment YARN would give it (`spark.yarn.appMasterEnv.*`), then sets the step's state.
The photos and the outputs are on S3, as in production: the node's `s3://` is Hadoop's S3A here, EMRFS on EMR.
The launcher polls EMR, streams the events back from S3, and the Dagster run succeeds or fails by them.
"""

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import boto3
import pyspark
import pytest
from dagster import DagsterInstance, DagsterRunStatus, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from fruits_assets.defs.assets.ingestion import raw_images
from fruits_assets.defs.emr_resources import POLL_ENV, PolledEmrStepLauncher, ProdSettingsError, poll_seconds
from fruits_assets.emr.cluster import ClusterParameters, cluster_request
from spark_code.jvm_class_archive import driver_java_options
from spark_code.jvm_packages import local_jars
from spark_code.settings import s3a_conf
from spark_code.storage.class_tables import read_classes
from tests.conftest import AWS_TEST_KEYS, WEIGHTS
from tests.fruits_assets.conftest import make_instance, make_resources

BUCKET = "fruits-prod-test"
CLASS = "Kiwi"
STEP_TIMEOUT_S = 300

LAUNCH = """
import sys
from dagster import AssetKey, DagsterInstance, execute_job
from dagster._core.definitions.reconstruct import ReconstructableRepository

job = ReconstructableRepository.for_module("fruits_assets.definitions", "defs").get_reconstructable_job("__ASSET_JOB")
with DagsterInstance.get() as instance:
    instance.add_dynamic_partitions("fruit_class", [sys.argv[1]])
    result = execute_job(
        job,
        instance,
        asset_selection=[AssetKey("image_embeddings"), AssetKey("rejected_images")],
        tags={"dagster/partition": sys.argv[1]},
    )
    for event in result.all_events:
        if event.is_step_failure:
            print("STEP_FAILURE", event.step_failure_data.error.to_string())
    print("RUN", result.run_id, "SUCCESS" if result.success else "FAILURE")
"""


def moto_step(cluster_id: str, step_id: str):
    """The step as moto's in-process backend holds it: the only way to move it past RUNNING."""
    from moto.emr.models import emr_backends

    for account in emr_backends.values():
        for backend in account.values():
            if cluster_id in backend.clusters:
                return next(step for step in backend.clusters[cluster_id].steps if step.id == step_id)
    raise KeyError(f"cluster {cluster_id} is not in moto's backends: {list(emr_backends)}")


def fetch(uri: str, folder: Path) -> str:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    target = folder / Path(key).name
    boto3.client("s3").download_file(bucket, key, str(target))
    return str(target)


def run_step_as_emr(args: list[str], folder: Path) -> subprocess.CompletedProcess:
    """spark-submit the step as EMR would, on local Spark: YARN's driver environment, staged files from S3."""
    assert args[:5] == ["/usr/lib/spark/bin/spark-submit", "--master", "yarn", "--deploy-mode", "cluster"], args
    confs, rest, index = {}, [], 5
    while index < len(args):
        if args[index] == "--conf":
            key, value = args[index + 1].split("=", 1)
            confs[key] = value
            index += 2
        else:
            rest.append(args[index])
            index += 1
    assert rest[0] == "--py-files", rest
    code_zip, main_file, bucket, step_run_ref_key = fetch(rest[1], folder), fetch(rest[2], folder), *rest[3:]
    driver_env = {
        name[len("spark.yarn.appMasterEnv.") :]: value
        for name, value in confs.items()
        if name.startswith("spark.yarn.appMasterEnv.")
    }
    # A node's own environment: its PATH and Java, and an instance role's credentials (here the test's keys).
    base = {name: os.environ[name] for name in ("PATH", "HOME", "JAVA_HOME", "LANG") if name in os.environ}
    aws = {name: value for name, value in os.environ.items() if name.startswith("AWS_")}
    env = {**base, **aws, **driver_env, "PYSPARK_PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "2"}
    conf_args = [
        arg
        for key, value in confs.items()
        if not key.startswith(("spark.yarn.", "spark.submit."))  # YARN's business; here the driver runs locally
        for arg in ("--conf", f"{key}={value}")
    ]
    spark_submit = str(Path(pyspark.__file__).parent / "bin" / "spark-submit")
    # The node's own jars on its class path: Delta Lake (the cluster's `delta-defaults` classification), and an S3
    # connector (EMRFS on EMR; Hadoop's S3A here, at the endpoint and region of the node's environment), with the class
    # archive made for them (a node's JVM starts with its classes as a cluster's warm nodes would).
    jars = local_jars()
    node_jvm = ["--driver-class-path", os.pathsep.join(jars), "--driver-java-options", driver_java_options(jars)]
    node_s3 = [arg for key, value in s3a_conf(env).items() for arg in ("--conf", f"{key}={value}")]
    command = [spark_submit, "--master", "local[2]", *node_jvm, *node_s3, *conf_args]
    command += ["--py-files", code_zip, main_file, bucket]
    return subprocess.run(
        [*command, step_run_ref_key], env=env, cwd=folder, capture_output=True, text=True, timeout=STEP_TIMEOUT_S
    )


def launch_and_play_cluster(env: dict[str, str], cluster_id: str, folder: Path) -> tuple[str, list[dict], list]:
    """Run the launching process; run each step it adds as EMR would. Returns its output, the steps, the runs."""
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, CLASS], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    emr = boto3.client("emr")
    handled: dict[str, dict] = {}
    runs = []
    deadline = time.monotonic() + STEP_TIMEOUT_S * 2
    while launcher.poll() is None and time.monotonic() < deadline:
        for step in emr.list_steps(ClusterId=cluster_id)["Steps"]:
            if step["Id"] in handled:
                continue
            handled[step["Id"]] = step
            completed = run_step_as_emr(step["Config"]["Args"], folder)
            runs.append(completed)
            moto_step(cluster_id, step["Id"]).state = "COMPLETED" if completed.returncode == 0 else "FAILED"
        time.sleep(0.25)
    if launcher.poll() is None:
        launcher.kill()
    output = launcher.communicate()[0]
    return output, list(handled.values()), runs


@pytest.fixture
def prod(aws, small_root, tmp_path, monkeypatch):
    """A bucket, a cluster made from emr_config/, one class's raw_images materialized, and the prod environment."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    cluster_id = boto3.client("emr").run_job_flow(**cluster_request(ClusterParameters(bucket=BUCKET)))["JobFlowId"]
    for photo in sorted(small_root.rglob("*.jpg")):
        s3.upload_file(str(photo), BUCKET, f"images/{photo.relative_to(small_root)}")
    images_root, output_root = f"s3://{BUCKET}/images", f"s3://{BUCKET}/outputs"
    materialize(
        [raw_images],
        resources=make_resources(images_root, output_root),
        instance=make_instance([CLASS]),
        tags={ASSET_PARTITION_RANGE_START_TAG: CLASS, ASSET_PARTITION_RANGE_END_TAG: CLASS},
    )
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith(("FRUITS_", "DAGSTER_"))},
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_DEPLOYMENT": "prod",
        "FRUITS_S3_BUCKET": BUCKET,
        "FRUITS_EMR_CLUSTER_ID": cluster_id,
        "FRUITS_EMR_POLL_SECONDS": "0.25",  # four looks a second, not dagster-aws's one per 15 s: the step is short
        "FRUITS_IMAGES_ROOT": images_root,
        "FRUITS_OUTPUT_ROOT": output_root,
        "FRUITS_MODEL_WEIGHTS": str(WEIGHTS),
        "FRUITS_MODEL_ALPHA": "0.35",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    folder = tmp_path / "cluster"
    folder.mkdir()
    return {"env": env, "cluster_id": cluster_id, "output_root": output_root, "home": dagster_home, "folder": folder}


def run_id_of(output: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith("RUN "))
    return line.split()[1]


def test_one_class_of_embeddings_materialized_through_the_emr_step_launcher(prod, spark, small_root):
    output, steps, runs = launch_and_play_cluster(prod["env"], prod["cluster_id"], prod["folder"])
    assert len(steps) == 1 and runs[0].returncode == 0, (runs[0].stdout + runs[0].stderr)[-3000:] if runs else output
    assert output.rstrip().endswith("SUCCESS"), output[-3000:]
    run_id = run_id_of(output)

    # The launcher staged its code package, the entry point and the step run reference; the step wrote events.
    listed = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"staging/{run_id}/")
    staged = {Path(item["Key"]).name for item in listed["Contents"]}
    assert {"code.zip", "emr_step_main.py", "step_run_ref.pkl", "events.pkl"} <= staged
    args = steps[0]["Config"]["Args"]
    assert f"spark.yarn.appMasterEnv.FRUITS_EMR_CLUSTER_ID={prod['cluster_id']}" in args

    # The materialization and its checks, run on the "cluster", reached this instance through S3.
    with DagsterInstance.from_config(str(prod["home"])) as instance:
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.SUCCESS
        materializations = [
            event.dagster_event.event_specific_data.materialization
            for event in instance.all_logs(run_id)
            if event.dagster_event and event.dagster_event.is_step_materialization
        ]
        logs = "\n".join(event.message or "" for event in instance.all_logs(run_id))
    by_asset = {m.asset_key.path[-1]: m for m in materializations}
    assert by_asset["image_embeddings"].partition == CLASS
    images = len(list((small_root / "Training" / CLASS).iterdir())) + len(list((small_root / "Test" / CLASS).iterdir()))
    assert by_asset["image_embeddings"].metadata["row_count"].value == images

    embeddings = read_classes(spark, f"{prod['output_root']}/image_embeddings", [CLASS])
    assert embeddings.count() == images
    assert embeddings.select("path").distinct().count() == images

    # No credential of the launching process travelled in the step, the staged files or the logs.
    staged_bytes = b"".join(
        boto3.client("s3").get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read() for item in listed["Contents"]
    )
    for secret in AWS_TEST_KEYS.values():
        assert secret not in " ".join(args) and secret not in output and secret not in logs
        assert secret.encode() not in staged_bytes


def test_a_step_that_raises_fails_the_run_with_its_error(prod):
    env = {**prod["env"], "FRUITS_MODEL_WEIGHTS": "/nonexistent/mobilenet.h5"}
    output, steps, runs = launch_and_play_cluster(env, prod["cluster_id"], prod["folder"])
    assert len(steps) == 1, output[-3000:]
    assert output.rstrip().endswith("FAILURE"), output[-3000:]
    failure = next(line for line in output.splitlines() if line.startswith("STEP_FAILURE"))
    assert "image_embeddings" in output
    assert "MobileNetV2 weights file not found: /nonexistent/mobilenet.h5" in output, failure
    with DagsterInstance.from_config(str(prod["home"])) as instance:
        assert instance.get_run_by_id(run_id_of(output)).status == DagsterRunStatus.FAILURE


BUILD_PROD_RESOURCES = """
import sys, tempfile
from pathlib import Path
from fruits_assets.definitions import resources_for
from fruits_assets.defs.emr_resources import code_package

for _ in range(4):
    resources_for("prod")
packages = sorted({code_package() for _ in range(3)})
for package in packages:
    assert (Path(package) / "fruits_assets" / "__init__.py").is_file() and (Path(package) / "spark_code").is_dir()
print(len(list(Path(tempfile.gettempdir()).glob("fruits-emr-code-*"))), *packages)
"""


@pytest.mark.slow
def test_building_the_prod_resources_again_leaves_no_code_folder_behind(tmp_path):
    """The launcher zips a copy of the project's packages: one per process, gone when the process ends."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith(("FRUITS_", "DAGSTER_"))},
        "TMPDIR": str(temp),
        "DAGSTER_HOME": str(tmp_path),
        "DAGSTER_DEPLOYMENT": "prod",
        "FRUITS_S3_BUCKET": BUCKET,
        "FRUITS_EMR_CLUSTER_ID": "j-NOTUSEDHERE",
    }
    built = subprocess.run(
        [sys.executable, "-c", BUILD_PROD_RESOURCES], env=env, capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr[-3000:]
    while_running, *packages = built.stdout.split()
    assert len(packages) == 1 and Path(packages[0]).parent == temp, packages
    assert int(while_running) == 1  # definitions loaded and the resources built 5 times: one copy
    assert not any(temp.glob("fruits-emr-code-*")), "the copy outlived its process"


@pytest.mark.parametrize(("value", "seconds"), [(None, 15.0), ("2.5", 2.5)])
def test_the_launcher_looks_at_a_running_step_as_often_as_set(monkeypatch, value, seconds):
    """The step launcher's interval between looks at EMR: FRUITS_EMR_POLL_SECONDS, else dagster-aws's 15 s; each
    look asks EMR and S3 once (recorded here on a launcher whose EMR answers "done" at the third look)."""
    if value is None:
        monkeypatch.delenv(POLL_ENV, raising=False)
    else:
        monkeypatch.setenv(POLL_ENV, value)
    launcher = PolledEmrStepLauncher.__new__(PolledEmrStepLauncher)  # no AWS client: only the loop is exercised
    launcher.poll_seconds, launcher.cluster_id = poll_seconds(), "j-1"
    slept: list[float] = []
    looks = iter([False, False, True])
    launcher.emr_job_runner = SimpleNamespace(is_emr_step_complete=lambda *_: next(looks))
    launcher.read_events = lambda *_: []
    monkeypatch.setattr("dagster_aws.emr.pyspark_step_launcher.time.sleep", slept.append)
    context = SimpleNamespace(log=None)
    assert list(launcher.wait_for_completion(context, None, "run", "step", "s-1")) == []
    assert slept == [seconds] * 3


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_poll_interval_that_is_not_a_positive_number_is_refused(monkeypatch, value):
    monkeypatch.setenv(POLL_ENV, value)
    with pytest.raises(ProdSettingsError, match=f"FRUITS_EMR_POLL_SECONDS must be a positive number.*{value}"):
        poll_seconds()
