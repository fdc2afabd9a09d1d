"""The `prod` deployment's environment: the variables naming its bucket and cluster, and its AWS region.

Kept free of Dagster imports: the step launcher's resources (`emr_resources`) and the EMR operations (`fruits emr`,
which reads the same names for its defaults) share them, and `fruits --help` never loads Dagster.
"""

from __future__ import annotations

import os

BUCKET_ENV = "FRUITS_S3_BUCKET"
"""The project bucket: staging, code, images and outputs."""
CLUSTER_ENV = "FRUITS_EMR_CLUSTER_ID"
"""The running cluster the step launcher sends steps to."""
DEFAULT_REGION = "eu-west-1"
"""Users' photos stay in the EU unless told otherwise."""


def region() -> str:
    """AWS_REGION, else AWS_DEFAULT_REGION, else DEFAULT_REGION."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
