"""Spark settings: one native BLAS thread per task, on a cluster's executors and in a local session's JVM; a local
session's shuffle partitions follow its cores."""

import os

from pyspark.sql import SparkSession

from spark_code.jvm_packages import local_jars
from spark_code.settings import (
    DELTA_SQL,
    ONE_BLAS_THREAD,
    SHUFFLE_PARTITIONS_PER_CORE,
    local_cores,
    one_blas_thread_here,
    s3a_conf,
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


def test_s3_goes_through_s3a_to_the_endpoint_and_region_the_environment_names():
    conf = s3a_conf({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1"})
    assert conf == {
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.endpoint.region": "eu-west-1",
        "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000",
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
    }
    assert (
        s3a_conf({"AWS_ENDPOINT_URL_S3": "https://minio.example", "AWS_ENDPOINT_URL": "http://other"})[
            "spark.hadoop.fs.s3a.endpoint"
        ]
        == "https://minio.example"
    )
    assert s3a_conf({}) == {"spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem"}


def test_a_session_started_here_gets_the_jars_and_a_cluster_step_only_deltas_sql(spark: SparkSession):
    here, cluster = spark_conf(master="local[2]"), spark_conf()
    assert here["spark.driver.extraClassPath"] == here["spark.executor.extraClassPath"] == os.pathsep.join(local_jars())
    assert not any(key.startswith(("spark.hadoop.", "spark.driver.extra", "spark.jars")) for key in cluster)
    assert {key: cluster[key] for key in DELTA_SQL} == DELTA_SQL
    assert spark.sparkContext._jvm.java.lang.Class.forName("org.apache.hadoop.fs.s3a.S3AFileSystem") is not None
