"""A class-data-sharing archive of the classes a local Spark driver loads, made once at install.

A cold JVM spends seconds loading and verifying Spark's, Delta's and Hadoop's classes from their jars before its first
job ends: with them mapped from an archive (the JDK's AppCDS, `-XX:SharedArchiveFile`) a new session that writes,
merges and reads a Delta table started and finished in 6.0 s here instead of 8.0-8.7. An archive only serves the Java
and the class path it was made with, so its name carries a fingerprint of both: a session whose fingerprint has no
archive (another Java, an upgraded pyspark, no `make install`) starts without one, as before.
`python -m spark_code.jvm_class_archive` makes it (`make install` does) in the Python environment's `share/fruits`, by
running the pipeline's kinds of Spark work once in a JVM that writes the classes it loaded as it exits.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ARCHIVE_PREFIX = "spark-classes-"
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"
"""An archive the JVM cannot use is skipped without a word on the run's output."""


def _java() -> Path | None:
    """The `java` spark-submit starts: JAVA_HOME's, else the first on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(found).resolve() if found and Path(found).is_file() else None


def _fingerprint(java: Path, class_path: list[str]) -> str:
    """Which Java (its binary and its modules image, which any JDK update rewrites) and which jars, each by path, size
    and modification time, as the JVM itself checks them before using an archive."""
    digest = hashlib.sha256()
    pyspark = importlib.util.find_spec("pyspark")
    spark_jars = sorted((Path(pyspark.origin).parent / "jars").glob("*.jar")) if pyspark and pyspark.origin else []
    for path in [java, java.parent.parent / "lib" / "modules", *map(Path, class_path), *spark_jars]:
        stat = path.stat() if path.exists() else None
        digest.update(f"{path}:{stat.st_size if stat else -1}:{stat.st_mtime_ns if stat else -1}\n".encode())
    return digest.hexdigest()[:16]


def archive_dir() -> Path:
    """This Python environment's own folder: the archive names this environment's pyspark jars, and goes with it (each
    clone's `.venv` has its own)."""
    return Path(sys.prefix) / "share" / "fruits"


def archive_path(class_path: list[str]) -> Path | None:
    """Where the archive for this Java and this driver class path (`spark.driver.extraClassPath`) is or would be."""
    java = _java()
    return archive_dir() / f"{ARCHIVE_PREFIX}{_fingerprint(java, class_path)}.jsa" if java else None


def driver_java_options(class_path: list[str]) -> str:
    """The driver JVM's options that map the archive, or "" where none was made for this Java and class path."""
    archive = archive_path(class_path)
    return f"-XX:SharedArchiveFile={archive} {QUIET}" if archive and archive.is_file() else ""


def _typical_work(spark: SparkSession) -> None:
    """The kinds of work a run does, on a few rows: a Delta table created, merged into, compacted and read; Parquet
    written by partition and read; Arrow batches through Python; Spark ML's PCA and logistic regression."""
    from delta.tables import DeltaTable
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import PCA, VectorAssembler

    rows = spark.range(40).selectExpr("id", "cast(id % 2 as string) as label", "rand(1) as x", "rand(2) as y")
    with tempfile.TemporaryDirectory(prefix="fruits-class-archive-") as folder:
        table = f"{folder}/delta"
        rows.write.format("delta").partitionBy("label").save(table)
        stored = DeltaTable.forPath(spark, table)
        later = rows.withColumn("id", rows.id + 20).alias("new")
        stored.alias("old").merge(later, "old.id = new.id").whenNotMatchedInsertAll().execute()
        stored.optimize().executeCompaction()
        read = spark.read.format("delta").load(table)
        read.mapInPandas(lambda batches: batches, read.schema).write.partitionBy("label").parquet(f"{folder}/pq")
        features = VectorAssembler(inputCols=["x", "y"], outputCol="v").transform(spark.read.parquet(f"{folder}/pq"))
        reduced = PCA(k=1, inputCol="v", outputCol="pca").fit(features).transform(features)
        labelled = reduced.selectExpr("pca", "cast(label as double) as target")
        LogisticRegression(featuresCol="pca", labelCol="target", maxIter=3).fit(labelled).transform(labelled).count()


def _remove_abandoned_parts(folder: Path) -> None:
    """Archives being written by a process that died (a JVM killed mid-write): gone after an hour."""
    for part in folder.glob(f".{ARCHIVE_PREFIX}*.part"):
        if time.time() - part.stat().st_mtime > 3600:
            part.unlink(missing_ok=True)


def make_archive() -> Path | None:
    """Run `_typical_work` in a local session whose JVM writes the classes it loaded as it exits, then put the archive
    in place (this environment's archives of other fingerprints go). None where no Java is found."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    from spark_code.settings import spark_conf

    conf = spark_conf(master="local[2]")
    target = archive_path(conf["spark.driver.extraClassPath"].split(os.pathsep))
    if target is None:
        return None
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    conf["spark.driver.extraJavaOptions"] = f"-XX:ArchiveClassesAtExit={partial} {QUIET}"
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the Python workers: this interpreter's packages
    builder = SparkSession.builder.master("local[2]").appName("fruits-class-archive")
    for key, value in {**conf, "spark.ui.showConsoleProgress": "false"}.items():
        builder = builder.config(key, value)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_parts(target.parent)
    try:
        spark = builder.getOrCreate()
        try:
            spark.sparkContext.setLogLevel("ERROR")
            _typical_work(spark)
        finally:
            spark.stop()
            # The JVM writes the archive as it exits, once its parent closes its stdin: wait for the file to be whole.
            process = SparkContext._gateway.proc
            process.stdin.close()
            process.wait(timeout=300)
        if not partial.is_file():
            raise RuntimeError(f"the JVM wrote no class archive at {partial}")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    for older in target.parent.glob(f"{ARCHIVE_PREFIX}*.jsa"):
        if older != target:
            older.unlink(missing_ok=True)
    return target


def main() -> None:
    made = make_archive()
    print(f"Spark's class archive: {made or 'not made (no java found)'}")


if __name__ == "__main__":
    main()
