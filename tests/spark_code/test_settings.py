"""Spark settings: one native BLAS thread per task, on a cluster's executors and in a local session's JVM."""

import os

from pyspark.sql import SparkSession

from spark_code.settings import ONE_BLAS_THREAD, one_blas_thread_here, spark_conf


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
