"""Spark settings: one native BLAS thread per task, on a cluster's executors and in a local session's JVM; a local
session's shuffle partitions follow its cores."""

import os

from pyspark.sql import SparkSession

from spark_code.settings import (
    ONE_BLAS_THREAD,
    SHUFFLE_PARTITIONS_PER_CORE,
    local_cores,
    one_blas_thread_here,
    spark_conf,
)
from tests.conftest import TEST_MASTER


def test_cluster_executors_get_one_blas_thread():
    conf = spark_conf()
    assert all(conf[f"spark.executorEnv.{key}"] == value for key, value in ONE_BLAS_THREAD.items())


def test_a_local_sessions_jvm_runs_with_one_blas_thread(spark: SparkSession):
    system = spark.sparkContext._jvm.java.lang.System  # the JVM that runs a local session's tasks
    assert {key: system.getenv(key) for key in ONE_BLAS_THREAD} == ONE_BLAS_THREAD


def test_a_users_own_setting_wins(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    one_blas_thread_here()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "4"


def test_local_masters_name_their_cores_and_a_cluster_gets_sparks_own_shuffle():
    assert [local_cores(m) for m in ("local", "local[3]", "local[2,4]", "local[*]")] == [1, 3, 2, os.cpu_count()]
    assert local_cores("spark://127.0.0.1:7077") is None and local_cores("yarn") is None
    assert spark_conf(master="local[3]")["spark.sql.shuffle.partitions"] == str(3 * SHUFFLE_PARTITIONS_PER_CORE)
    assert "spark.sql.shuffle.partitions" not in spark_conf(master="yarn") | spark_conf()


def test_a_persisted_shuffle_result_has_a_few_partitions_per_core(spark: SparkSession):
    """What a persisted deduplication gives the passes over it (Spark 3.5 keeps its shuffle's partitions there)."""
    rows = spark.createDataFrame([(str(i % 40), i) for i in range(400)], "path string, n long")
    kept = rows.dropDuplicates(["path"]).persist()
    try:
        assert kept.count() == 40
        assert kept.rdd.getNumPartitions() <= local_cores(TEST_MASTER) * SHUFFLE_PARTITIONS_PER_CORE
    finally:
        kept.unpersist()
