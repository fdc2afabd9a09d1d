"""The `prod` resource set: every asset step runs on EMR through dagster-aws's step launcher, data on S3.

Settings come from the launching process's environment (FRUITS_*, AWS_REGION) and the standard AWS credential
chain. The step runs on the cluster in YARN cluster mode; the settings reach its driver as
`spark.yarn.appMasterEnv.*`, so that the remote process loads the same `prod` definitions with the same settings.
Credentials are never passed along: on EMR the nodes' instance profile provides them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from dagster import InitResourceContext, ResourceDefinition, resource
from dagster_aws.emr import emr_pyspark_step_launcher
from dagster_aws.emr.pyspark_step_launcher import EmrPySparkStepLauncher
from dagster_aws.s3 import S3Resource
from dagster_pyspark import LazyPySparkResource

from fruits_assets.defs.prod_env import BUCKET_ENV, CLUSTER_ENV, region
from spark_code.settings import ModelSettings, spark_conf

PACKAGES = ("fruits_assets", "spark_code")
"""What the launcher zips and ships with each step (`--py-files`); third-party packages come from the bootstrap."""

STAGING_PREFIX = "staging"
REMOTE_ENV_PREFIXES = ("FRUITS_",)
REMOTE_ENV_NAMES = ("AWS_REGION", "AWS_DEFAULT_REGION")
"""Environment handed to the step's driver on the cluster; AWS keys are deliberately not among them."""


class ProdSettingsError(RuntimeError):
    """A setting the prod deployment cannot do without is missing."""


def required_env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ProdSettingsError(f"DAGSTER_DEPLOYMENT=prod needs {name} to be set")
    return value


def prod_defaults(bucket: str) -> dict[str, str]:
    """Where images and outputs live unless FRUITS_IMAGES_ROOT / FRUITS_OUTPUT_ROOT say otherwise."""
    return {"FRUITS_IMAGES_ROOT": f"s3://{bucket}/images", "FRUITS_OUTPUT_ROOT": f"s3://{bucket}/outputs"}


def remote_env() -> dict[str, str]:
    """The variables the step's driver on the cluster needs to resolve the same resources as this process."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name.startswith(REMOTE_ENV_PREFIXES) or name in REMOTE_ENV_NAMES
    }
    return {**env, "DAGSTER_DEPLOYMENT": "prod"}


CODE_PACKAGE_PREFIX = "fruits-emr-code-"
_code_package: tuple[int, str] | None = None
"""This process's copy of the packages: (process id, folder)."""
_code_package_lock = threading.Lock()


def _remove_code_package(pid: int, folder: str) -> None:
    if os.getpid() == pid:  # a forked child inherits the exit handler, not the folder
        shutil.rmtree(folder, ignore_errors=True)


def code_package() -> str:
    """A folder holding only the project's packages, for the launcher to zip: the repository root also holds
    virtual environments and outputs that must not travel with every step.

    One copy per process, whatever number of times the prod resources are built, removed when the process exits
    (the launcher zips it at each step launch, so it must live as long as the process)."""
    global _code_package
    source = Path(__file__).resolve().parents[2]
    if not (source / PACKAGES[0]).is_dir():
        return str(source)  # imported from the shipped zip, i.e. on the cluster, where nothing is launched
    with _code_package_lock:
        if _code_package and _code_package[0] == os.getpid() and Path(_code_package[1]).is_dir():
            return _code_package[1]
        target = Path(tempfile.mkdtemp(prefix=CODE_PACKAGE_PREFIX))
        atexit.register(_remove_code_package, os.getpid(), str(target))
        for package in PACKAGES:
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(source / package, target / package, ignore=ignore)
        _code_package = (os.getpid(), str(target))
        return str(target)


def _typed(value: str, config_type: Any) -> object:
    """A Spark setting as the launcher's schema types it (it knows some keys as Bool, Int or Float)."""
    key = getattr(config_type, "key", "")
    if key == "Bool":
        return value == "true"
    if key in ("Int", "IntSourceType"):
        return int(value)
    if key == "Float":
        return float(value)
    return value


def _nested(flat: dict[str, str]) -> dict[str, Any]:
    """{"spark.a.b": v} -> {"spark": {"a": {"b": v}}}, the shape and value types of the launcher's spark_config."""
    schema = emr_pyspark_step_launcher.config_schema.config_type.fields["spark_config"].config_type
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node, fields = nested, schema.fields
        for part in parents:
            node = node.setdefault(part, {})
            field = fields.get(part)
            fields = getattr(field.config_type, "fields", {}) if field else {}
        leaf_field = fields.get(leaf)
        node[leaf] = _typed(value, leaf_field.config_type) if leaf_field else value
    return nested


def step_spark_conf(env: dict[str, str]) -> dict[str, str]:
    """spark-submit settings of every step: YARN cluster mode, the pipeline's settings, the remote environment."""
    batch_size = int(env.get("FRUITS_BATCH_SIZE", ModelSettings.batch_size))
    return {
        "spark.submit.deployMode": "cluster",
        "spark.yarn.maxAppAttempts": "1",  # Dagster's retry policy decides about retries, not YARN
        **spark_conf(batch_size),
        **{f"spark.yarn.appMasterEnv.{name}": value for name, value in sorted(env.items())},
    }


POLL_ENV = "FRUITS_EMR_POLL_SECONDS"
DEFAULT_POLL_SECONDS = 15.0
"""dagster-aws's own interval between two looks at a running step (EMR rate-limits frequent polling)."""


class PolledEmrStepLauncher(EmrPySparkStepLauncher):
    """dagster-aws's launcher, looking at a running step every `poll_seconds` instead of its fixed 15 s: a step of a
    few seconds (one small class) otherwise waits 15 s or more before its run learns it is done."""

    poll_seconds: float = DEFAULT_POLL_SECONDS

    def wait_for_completion(
        self,
        step_context: Any,
        s3: Any,
        run_id: str,
        step_key: str,
        emr_step_id: str,
        check_interval: float | None = None,
    ) -> Any:
        interval = self.poll_seconds if check_interval is None else check_interval
        return super().wait_for_completion(step_context, s3, run_id, step_key, emr_step_id, interval)


@resource(config_schema=emr_pyspark_step_launcher.config_schema, description=PolledEmrStepLauncher.__doc__)
def polled_emr_step_launcher(context: InitResourceContext) -> PolledEmrStepLauncher:
    """dagster-aws's own resource function builds the launcher (its reading of the config included); this one only
    gives it the poll interval."""
    launcher = emr_pyspark_step_launcher.resource_fn(context)
    polled = PolledEmrStepLauncher.__new__(PolledEmrStepLauncher)
    polled.__dict__.update(vars(launcher))
    polled.poll_seconds = poll_seconds()
    return polled


def poll_seconds() -> float:
    """FRUITS_EMR_POLL_SECONDS, else dagster-aws's 15 s; a value that is not a positive number is refused."""
    value = os.environ.get(POLL_ENV, str(DEFAULT_POLL_SECONDS))
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ProdSettingsError(f"{POLL_ENV} must be a positive number of seconds, got {value!r}")
    return seconds


def emr_step_launcher() -> ResourceDefinition:
    """dagster-aws's EMR PySpark step launcher for the cluster FRUITS_EMR_CLUSTER_ID, staging in the bucket."""
    bucket = required_env(BUCKET_ENV)
    return polled_emr_step_launcher.configured(
        {
            "cluster_id": {"env": CLUSTER_ENV},
            "region_name": region(),
            "staging_bucket": bucket,
            "staging_prefix": STAGING_PREFIX,
            "local_job_package_path": code_package(),
            "deploy_local_job_package": True,
            "wait_for_logs": False,
            "spark_config": _nested(step_spark_conf(remote_env())),
        }
    )


def yarn_spark() -> LazyPySparkResource:
    """The session of a step on the cluster: spark-submit already chose YARN, this adds the pipeline's settings."""
    batch_size = int(os.environ.get("FRUITS_BATCH_SIZE", ModelSettings.batch_size))
    return LazyPySparkResource(spark_config={"spark.app.name": "fruits", **spark_conf(batch_size)})


def s3_resource() -> S3Resource:
    return S3Resource(region_name=region())
