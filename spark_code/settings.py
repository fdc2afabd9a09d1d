"""Every tunable of the Spark and TensorFlow code, in one place."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from spark_code.jvm_class_archive import driver_java_options
from spark_code.jvm_packages import local_jars

EMBEDDING_WIDTH = 1280
"""Width of MobileNetV2's pooled feature vector, whatever the alpha (the last conv block is always 1280 wide)."""

RANDOM_WEIGHTS = "random"
"""ModelSettings.weights value for an untrained model: same cost as a trained one, so benchmarks can time any alpha
offline. Its features differ between processes: never use it for real outputs."""

MAX_IMAGE_PIXELS = 40_000_000
"""Images declaring more pixels than this are refused before any decoding (decompression bombs)."""

DEFAULT_OUTPUT_ROOT = "fruits-output"
OUTPUT_ROOT_ENV = "FRUITS_OUTPUT_ROOT"


def chosen_output_root(given: str | None = None) -> str:
    """The output root a command works on: the one given, else FRUITS_OUTPUT_ROOT, else ./fruits-output."""
    return given or os.environ.get(OUTPUT_ROOT_ENV) or DEFAULT_OUTPUT_ROOT


@dataclass(frozen=True)
class ModelSettings:
    """What defines an embedding: two runs with equal settings give identical features."""

    weights: str = "imagenet"
    """Keras's "imagenet" download, a weights file (local path or any URI Spark can read, e.g. s3://), or
    RANDOM_WEIGHTS (benchmarks only)."""
    alpha: float = 1.0
    image_size: int = 160
    """Square input of the network: photos are resized to it. 160 is the cheapest setting that reached 99.3% Test
    accuracy on the shared sample with k <= 100 (`fruits bench accuracy`, BENCHMARKS.md): half the model work of 224
    for the same accuracy there (its photos are 100x100; upscaling them further adds no detail)."""
    batch_size: int = 64
    flip_average: bool = True
    """Embed each image and its mirror image (left-right) and keep the mean: twice the model's work, and Test
    accuracy on the shared sample goes from 99.11% to 99.34% (BENCHMARKS.md), since a fruit seen from the other
    side is still the same fruit."""


ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1"}
"""The environment of every JVM that runs Spark ML tasks: Spark already runs one task per core, and OpenBLAS's own
threads on top of them fought over the cores (the classifier's L-BFGS iterations on the full sample: 317 ms each
with OpenBLAS's default threads, 242 ms with one; BENCHMARKS.md, "Main job against the bare model")."""


def one_blas_thread_here() -> None:
    """Give a JVM started from this process (a local session, whose driver runs the tasks) ONE_BLAS_THREAD, unless
    the environment already says otherwise; a cluster's executors get it from `spark_conf`."""
    for key, value in ONE_BLAS_THREAD.items():
        os.environ.setdefault(key, value)


SHUFFLE_PARTITIONS_PER_CORE = 4
"""A local session's shuffle partitions per core. Spark's 200 suit a cluster: adaptive execution merges the small
ones of a query, but Spark 3.5 keeps all 200 in a result that is persisted (a tiny run's `image_embeddings` took
1,828 tasks for 3 photos); a few per core keep each task's share small on a laptop too."""


def local_cores(master: str) -> int | None:
    """The cores of a local master (`local`, `local[4]`, `local[*]`, `local[4,2]`); None for a cluster's."""
    found = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", master.strip())
    if not found:
        return None
    if found[1] is None:
        return 1
    return (os.cpu_count() or 1) if found[1] == "*" else int(found[1])


DELTA_SQL = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
"""Delta Lake's SQL (MERGE, OPTIMIZE, VACUUM) in every session: the embedding store is a Delta table."""


def _local_session_conf(cores: int) -> dict[str, str]:
    """What a session on this machine's cores needs beyond a cluster's: few shuffle partitions, Delta's log read
    and its tables' listings in a few tasks (Spark's defaults, 50 and 10,000 tasks, made a VACUUM of a small table
    take 25 s instead of 3 here)."""
    return {
        "spark.sql.shuffle.partitions": str(SHUFFLE_PARTITIONS_PER_CORE * cores),
        "spark.databricks.delta.snapshotPartitions": str(cores),
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(SHUFFLE_PARTITIONS_PER_CORE * cores),
    }


def s3a_conf(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """How a session this process starts reaches `s3://`: through Hadoop's S3A connector (EMR's own connector does it
    on the cluster), with the standard AWS credential chain, and the region and endpoint the environment names
    (AWS_REGION, AWS_ENDPOINT_URL(_S3): an S3-compatible server such as moto's or MinIO, addressed path-style)."""
    hadoop = {"fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem"}
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        hadoop["fs.s3a.endpoint.region"] = region
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        hadoop |= {
            "fs.s3a.endpoint": endpoint,
            "fs.s3a.path.style.access": "true",
            "fs.s3a.connection.ssl.enabled": str(endpoint.startswith("https:")).lower(),
        }
    return {f"spark.hadoop.{key}": value for key, value in hadoop.items()}


def spark_conf(batch_size: int = ModelSettings.batch_size, master: str | None = None) -> dict[str, str]:
    """Spark settings the pipeline relies on, for a local session and for a cluster alike. With a `master`, a session
    this process starts (local or a standalone cluster): also the JVM packages pyspark lacks (Delta Lake, S3A:
    `spark_code.jvm_packages`, fetched if missing; a standalone cluster's workers find them at the same path) and
    S3A's settings (`s3a_conf`) and the driver's class archive (`spark_code.jvm_class_archive`), where `make install`
    made one; with a local master, its small-machine settings. Without one (a step on EMR), the
    cluster provides Delta and its own S3 connector."""
    cores = local_cores(master) if master else None
    local = _local_session_conf(cores) if cores else {}
    jars = {}
    if master:
        # On the JVMs' class path, not in spark.jars: each executor of a standalone cluster would copy their 290 MB
        # from the driver as it starts (the cluster tests took 20-25 s longer).
        jars_here = local_jars()
        classpath = os.pathsep.join(jars_here)
        jars = {"spark.driver.extraClassPath": classpath, "spark.executor.extraClassPath": classpath, **s3a_conf()}
        # The driver's JVM starts seconds sooner with the classes it loads mapped from an archive made at install.
        if options := driver_java_options(jars_here):
            jars["spark.driver.extraJavaOptions"] = options
    return {
        **DELTA_SQL,
        **jars,
        **{f"spark.executorEnv.{key}": value for key, value in ONE_BLAS_THREAD.items()},
        # Class folders like "1" or "2019" stay strings.
        "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
        # One Arrow batch is one model batch.
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_size),
        # Image files are small: pack many per task instead of paying 4 MB of "open cost" per file.
        "spark.sql.files.openCostInBytes": str(64 * 1024),
        # No session-wide cache of file listings: a class folder that gained images must be listed afresh.
        "spark.sql.hive.filesourcePartitionFileCacheSize": "0",
        "spark.python.worker.reuse": "true",
        # Adaptive execution also for persisted DataFrames (Spark leaves it off for them): Spark 4 then merges the
        # small shuffle partitions of a persisted join or deduplication; Spark 3.5 still keeps all of them there
        # (hence a local session's SHUFFLE_PARTITIONS_PER_CORE).
        "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true",
        "spark.sql.session.timeZone": "UTC",
        **local,
    }
