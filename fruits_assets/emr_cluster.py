"""The production cluster as code: `emr_config/` rendered and applied with boto3 (`fruits emr setup|up|status|down`).

The files in `emr_config/` are what a person reviews; this module only fills in their `${...}` placeholders
(bucket, account, region) and the size parameters, and calls the AWS APIs. Credentials come from boto3's
standard chain (environment, profile, instance role); an `AWS_ENDPOINT_URL` redirects every call, as the tests do.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

EMR_CONFIG = Path(__file__).resolve().parents[1] / "emr_config"
DEFAULT_REGION = "eu-west-1"
"""Users' photos stay in the EU unless told otherwise."""

CODE_PREFIX = "code/"
CODE_FILES = ("bootstrap.sh", "requirements-emr.txt")
"""Uploaded to s3://<bucket>/code/ before the cluster starts: the bootstrap action runs them on every node."""

SERVICE_ROLE = "fruits-emr-service-role"
INSTANCE_ROLE = "fruits-emr-instance-role"
INSTANCE_PROFILE = "fruits-emr-instance-profile"
LAUNCHER_POLICY = "fruits-launcher"


@dataclass(frozen=True)
class ClusterParameters:
    """What may differ between clusters; everything else is in `emr_config/cluster.json`."""

    bucket: str
    name: str = "fruits"
    master_instance_type: str = "m5.xlarge"
    core_instance_type: str = "m5.xlarge"
    core_instances: int = 2
    idle_timeout_s: int = 3600
    subnet_id: str | None = None


def render_document(name: str, **values: str) -> Any:
    """A JSON file of `emr_config/` with its `${...}` placeholders filled; a missing value is an error."""
    text = (EMR_CONFIG / name).read_text(encoding="utf-8")
    return json.loads(string.Template(text).substitute(values))


def cluster_request(parameters: ClusterParameters) -> dict[str, Any]:
    """The RunJobFlow request of `emr_config/cluster.json` for these parameters."""
    request = render_document("cluster.json", bucket=parameters.bucket, cluster_name=parameters.name)
    groups = {group["InstanceRole"]: group for group in request["Instances"]["InstanceGroups"]}
    groups["MASTER"]["InstanceType"] = parameters.master_instance_type
    groups["CORE"]["InstanceType"] = parameters.core_instance_type
    groups["CORE"]["InstanceCount"] = parameters.core_instances
    request["AutoTerminationPolicy"]["IdleTimeout"] = parameters.idle_timeout_s
    if parameters.subnet_id:
        request["Instances"]["Ec2SubnetId"] = parameters.subnet_id
    return request


def _ignore_existing(call, *codes: str) -> None:
    """Run an AWS call that creates something; "already exists" means a previous setup did it."""
    try:
        call()
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in codes:
            raise


def setup_bucket(session: boto3.session.Session, bucket: str) -> None:
    """Create the project bucket (if needed) with public access blocked, default encryption and TLS only."""
    s3 = session.client("s3")
    settings = render_document("bucket.json", bucket=bucket)
    create: dict[str, Any] = {"Bucket": bucket}
    if session.region_name != "us-east-1":
        create["CreateBucketConfiguration"] = {"LocationConstraint": session.region_name}
    _ignore_existing(lambda: s3.create_bucket(**create), "BucketAlreadyOwnedByYou")
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=settings["PublicAccessBlockConfiguration"])
    s3.put_bucket_encryption(
        Bucket=bucket, ServerSideEncryptionConfiguration=settings["ServerSideEncryptionConfiguration"]
    )
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(settings["Policy"]))


def setup_iam(session: boto3.session.Session, bucket: str) -> dict[str, str]:
    """Create the EMR service role, the nodes' instance profile and the launcher's policy; returns their ARNs."""
    iam = session.client("iam")
    values = {
        "bucket": bucket,
        "region": session.region_name,
        "account_id": session.client("sts").get_caller_identity()["Account"],
    }
    roles = {SERVICE_ROLE: "emr-service-role.trust.json", INSTANCE_ROLE: "instance-role.trust.json"}
    for role, trust in roles.items():
        document = json.dumps(render_document(f"iam/{trust}", **values))
        _ignore_existing(
            lambda role=role, document=document: iam.create_role(RoleName=role, AssumeRolePolicyDocument=document),
            "EntityAlreadyExists",
        )
    for role, arns in render_document("iam/managed-policies.json").items():
        for arn in arns:
            iam.attach_role_policy(RoleName=role, PolicyArn=arn)
    iam.put_role_policy(
        RoleName=INSTANCE_ROLE,
        PolicyName="fruits-data",
        PolicyDocument=json.dumps(render_document("iam/instance-role.policy.json", **values)),
    )
    _ignore_existing(lambda: iam.create_instance_profile(InstanceProfileName=INSTANCE_PROFILE), "EntityAlreadyExists")
    _ignore_existing(
        lambda: iam.add_role_to_instance_profile(InstanceProfileName=INSTANCE_PROFILE, RoleName=INSTANCE_ROLE),
        "LimitExceeded",
    )
    launcher = json.dumps(render_document("iam/launcher.policy.json", **values))
    _ignore_existing(
        lambda: iam.create_policy(PolicyName=LAUNCHER_POLICY, PolicyDocument=launcher), "EntityAlreadyExists"
    )
    account = values["account_id"]
    return {
        "service_role": f"arn:aws:iam::{account}:role/{SERVICE_ROLE}",
        "instance_role": f"arn:aws:iam::{account}:role/{INSTANCE_ROLE}",
        "instance_profile": f"arn:aws:iam::{account}:instance-profile/{INSTANCE_PROFILE}",
        "launcher_policy": f"arn:aws:iam::{account}:policy/{LAUNCHER_POLICY}",
    }


def upload_code(session: boto3.session.Session, bucket: str) -> list[str]:
    """Put the bootstrap script and the pinned requirements where the bootstrap action reads them."""
    s3 = session.client("s3")
    uris = []
    for name in CODE_FILES:
        s3.upload_file(str(EMR_CONFIG / name), bucket, CODE_PREFIX + name)
        uris.append(f"s3://{bucket}/{CODE_PREFIX}{name}")
    return uris


def cluster_up(session: boto3.session.Session, parameters: ClusterParameters, wait: bool = True) -> str:
    """Upload the bootstrap files, create the cluster and (by default) wait until it accepts steps."""
    upload_code(session, parameters.bucket)
    emr = session.client("emr")
    cluster_id = emr.run_job_flow(**cluster_request(parameters))["JobFlowId"]
    if wait:
        emr.get_waiter("cluster_running").wait(ClusterId=cluster_id, WaiterConfig={"Delay": 30, "MaxAttempts": 80})
    return cluster_id


def cluster_status(session: boto3.session.Session, cluster_id: str) -> dict[str, Any]:
    """The cluster's state and its steps' states, as a person checks them before launching a backfill."""
    emr = session.client("emr")
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    steps: dict[str, int] = {}
    for page in emr.get_paginator("list_steps").paginate(ClusterId=cluster_id):
        for step in page["Steps"]:
            state = step["Status"]["State"]
            steps[state] = steps.get(state, 0) + 1
    return {
        "id": cluster["Id"],
        "name": cluster["Name"],
        "state": cluster["Status"]["State"],
        "reason": cluster["Status"].get("StateChangeReason", {}).get("Message", ""),
        "release": cluster.get("ReleaseLabel", ""),
        "master_dns": cluster.get("MasterPublicDnsName", ""),
        "steps": steps,
    }


def cluster_down(session: boto3.session.Session, cluster_id: str, wait: bool = True) -> None:
    """Terminate the cluster and (by default) wait until it is gone."""
    emr = session.client("emr")
    emr.terminate_job_flows(JobFlowIds=[cluster_id])
    if wait:
        emr.get_waiter("cluster_terminated").wait(ClusterId=cluster_id, WaiterConfig={"Delay": 30, "MaxAttempts": 60})
