#!/bin/bash
# EMR bootstrap action: runs on EVERY node (master and core) before Spark starts.
# Installs Python 3.11 and the project's exact package versions into /opt/fruits/venv; the cluster's
# spark-env / spark-defaults (emr_config/cluster.json) point PySpark's driver and workers at that Python.
# Argument 1: S3 URI of requirements-emr.txt (uploaded by `fruits emr up`).
set -euo pipefail

REQUIREMENTS_URI="${1:?usage: bootstrap.sh s3://bucket/code/requirements-emr.txt}"
VENV=/opt/fruits/venv

if ! command -v python3.11 >/dev/null 2>&1; then
  sudo dnf install -y python3.11 python3.11-pip
fi
sudo mkdir -p /opt/fruits
sudo chown "$(id -u):$(id -g)" /opt/fruits
python3.11 -m venv "$VENV"
aws s3 cp "$REQUIREMENTS_URI" /opt/fruits/requirements-emr.txt
"$VENV/bin/pip" install --quiet --upgrade pip
# --no-deps: the file pins the complete closure, so what runs here is exactly what CI tested.
"$VENV/bin/pip" install --quiet --no-deps -r /opt/fruits/requirements-emr.txt
"$VENV/bin/python" -c "import dagster_aws, pyspark, tensorflow; print('fruits python ready', pyspark.__version__)"
