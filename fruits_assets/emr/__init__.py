"""The `prod` deployment: the EMR step launcher and its resources (`resources`), the cluster and its IAM as code
(`cluster`, from `emr_config/`), and `fruits emr setup|up|status|down` (`cli`). Definitions import `resources`; the
command line imports `cli`; nothing here imports the command line."""

BUCKET_ENV = "FRUITS_S3_BUCKET"
"""The project bucket: staging, code, images and outputs."""
CLUSTER_ENV = "FRUITS_EMR_CLUSTER_ID"
"""The running cluster the step launcher sends steps to."""
