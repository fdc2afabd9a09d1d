"""The local Spark session's settings, and starting it ahead of time.

Kept free of Dagster imports: `fruits run` starts the session in the background before it imports Dagster and plans
the run, so the 5-10 s a Spark session takes to start overlap with that work instead of adding to it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING

from spark_code.settings import ModelSettings, one_blas_thread_here, spark_conf

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

LOG = logging.getLogger(__name__)

SPARK_CONF_ENV = "FRUITS_SPARK_CONF"
"""A JSON object of extra Spark settings (e.g. executor memory on a standalone cluster), applied last."""


def extra_spark_conf() -> dict[str, str]:
    """The settings of FRUITS_SPARK_CONF; anything but a JSON object of settings is a clear error."""
    raw = os.environ.get(SPARK_CONF_ENV, "").strip()
    if not raw:
        return {}
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{SPARK_CONF_ENV} is not valid JSON: {exc}") from exc
    if not isinstance(conf, dict):
        raise ValueError(f"{SPARK_CONF_ENV} must be a JSON object of Spark settings")
    return {str(key): str(value) for key, value in conf.items()}


def local_spark_conf(console_progress: bool = True) -> dict[str, str]:
    """Spark settings of the session driven from this process: local[*], or the master in FRUITS_SPARK_MASTER (e.g.
    spark://host:7077), then FRUITS_SPARK_CONF. Python workers run this interpreter so they see the same packages;
    the JVM gets one BLAS thread per task. `console_progress`: Spark's own `[Stage 3:==>  (5 + 2) / 62]` bars on
    stderr (off under `fruits run`'s progress display)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    one_blas_thread_here()
    master = os.environ.get("FRUITS_SPARK_MASTER", "local[*]")
    return {
        "spark.master": master,
        "spark.app.name": "fruits",
        "spark.driver.memory": os.environ.get("FRUITS_SPARK_DRIVER_MEMORY", "4g"),
        "spark.ui.showConsoleProgress": str(console_progress).lower(),
        **spark_conf(int(os.environ.get("FRUITS_BATCH_SIZE", ModelSettings.batch_size)), master),
        **extra_spark_conf(),
    }


def _start(conf: dict[str, str]) -> None:
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    from spark_code.features.embedding_store import warm_up

    if SparkContext._active_spark_context is not None:  # noqa: SLF001 - pyspark's own marker of a started context
        return  # a session this process started earlier (tests, a notebook): warm already, nothing to overlap
    try:
        builder = SparkSession.builder
        for key, value in conf.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
    except Exception:  # noqa: BLE001 - the step that needs Spark starts it again and fails with the real error
        LOG.debug("starting Spark ahead of time failed", exc_info=True)
        return
    try:
        warm_up(spark)
    except Exception:  # noqa: BLE001 - only time is at stake: the store's first write pays it instead
        LOG.debug("warming Delta up ahead of time failed", exc_info=True)


def start_in_background(console_progress: bool = True) -> threading.Thread:
    """Start the local session in a daemon thread. Spark's builder holds its lock while the session starts, so a
    step asking for the session meanwhile waits for this one and gets it; a run with nothing to do exits without
    waiting (the JVM ends with this process). The session's static settings, Spark's console progress among them,
    are this one's (the steps' later `getOrCreate` reuses it)."""
    conf = local_spark_conf(console_progress)
    thread = threading.Thread(target=_start, args=(conf,), name="spark-start", daemon=True)
    thread.start()
    return thread


def local_session() -> SparkSession:
    """The session of this process: the one started ahead (start_in_background) or by a step, else a new one with
    the same settings."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in local_spark_conf(console_progress=False).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
