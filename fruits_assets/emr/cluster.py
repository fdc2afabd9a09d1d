"""The production cluster as code: `emr_config/` rendered and applied with boto3 (`fruits emr setup|up|status|down`).

The files in `emr_config/` are what a person reviews; this module only fills in their `${...}` placeholders
(bucket, account, region) and the size parameters, and calls the AWS APIs. Credentials come from boto3's
standard chain (environment, profile, instance role); an `AWS_ENDPOINT_URL` redirects every call, as the tests do.
"""

from __future__ import annotations

import json
import string
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

EMR_CONFIG = Path(__file__).resolve().parents[2] / "emr_config"

CODE_PREFIX = "code/"
CODE_FILES = ("bootstrap.sh", "requirements-emr.txt")
"""Uploaded to s3://<bucket>/code/ before the cluster starts: the bootstrap action runs them on every node."""

SERVICE_ROLE = "fruits-emr-service-role"
INSTANCE_ROLE = "fruits-emr-instance-role"
INSTANCE_PROFILE = "fruits-emr-instance-profile"
LAUNCHER_POLICY = "fruits-launcher"
MAX_POLICY_VERSIONS = 5
"""IAM keeps at most this many versions of a managed policy."""


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


class SetupConflict(RuntimeError):
    """Something setup would have to take from someone else: it stops and says what, rather than take it."""


def _ignore_existing(call, *codes: str) -> bool:
    """Run an AWS call that creates something; "already exists" means a previous setup did it. True if it created."""
    try:
        call()
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in codes:
            raise
        return False
    return True


def _document(value: Any) -> Any:
    """A policy document as IAM returns it (botocore decodes it; raw responses hold URL-encoded JSON)."""
    return json.loads(urllib.parse.unquote(value)) if isinstance(value, str) else value


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


def _setup_role(iam, role: str, trust: dict[str, Any]) -> None:
    """Create the role, or bring an existing one's trust policy to the reviewed document."""
    document = json.dumps(trust)
    if _ignore_existing(
        lambda: iam.create_role(RoleName=role, AssumeRolePolicyDocument=document), "EntityAlreadyExists"
    ):
        return
    if _document(iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]) != trust:
        iam.update_assume_role_policy(RoleName=role, PolicyDocument=document)


def _profile_roles(iam) -> list[str]:
    profile = iam.get_instance_profile(InstanceProfileName=INSTANCE_PROFILE)["InstanceProfile"]
    return [role["RoleName"] for role in profile["Roles"]]


def _setup_instance_profile(iam) -> None:
    """The nodes' instance profile holding the nodes' role. A profile holds one role: one holding another role is
    reported, never taken over (whatever runs with that profile would lose its rights)."""
    created = _ignore_existing(
        lambda: iam.create_instance_profile(InstanceProfileName=INSTANCE_PROFILE), "EntityAlreadyExists"
    )
    held = [] if created else _profile_roles(iam)
    if not held:
        added = _ignore_existing(
            lambda: iam.add_role_to_instance_profile(InstanceProfileName=INSTANCE_PROFILE, RoleName=INSTANCE_ROLE),
            "LimitExceeded",
        )
        if added:
            return
        held = _profile_roles(iam)  # LimitExceeded: the profile holds a role we did not see (yet)
    if held != [INSTANCE_ROLE]:
        raise SetupConflict(
            f"instance profile {INSTANCE_PROFILE} already holds role {', '.join(held) or '(not visible yet)'}, "
            f"not {INSTANCE_ROLE}: if nothing uses the profile, remove that role "
            f"(aws iam remove-role-from-instance-profile --instance-profile-name {INSTANCE_PROFILE} "
            f"--role-name {held[0] if held else '<role>'}) and run setup again"
        )


def _setup_managed_policy(iam, arn: str, name: str, document: dict[str, Any]) -> str:
    """Create the policy, or publish the reviewed document as its new default version if it differs from the
    default one. IAM keeps at most 5 versions: the oldest that is not the default goes first. Returns the default
    version's id."""
    text = json.dumps(document)
    try:
        return iam.create_policy(PolicyName=name, PolicyDocument=text)["Policy"]["DefaultVersionId"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "EntityAlreadyExists":
            raise
    default = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    current = iam.get_policy_version(PolicyArn=arn, VersionId=default)["PolicyVersion"]["Document"]
    if _document(current) == document:
        return default
    versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
    if len(versions) >= MAX_POLICY_VERSIONS:
        older = [v for v in versions if not v["IsDefaultVersion"]]
        oldest = min(older, key=lambda v: (v["CreateDate"], int(v["VersionId"].lstrip("v"))))
        iam.delete_policy_version(PolicyArn=arn, VersionId=oldest["VersionId"])
    created = iam.create_policy_version(PolicyArn=arn, PolicyDocument=text, SetAsDefault=True)
    return created["PolicyVersion"]["VersionId"]


def setup_iam(session: boto3.session.Session, bucket: str) -> dict[str, str]:
    """Create the EMR service role, the nodes' instance profile and the launcher's policy, or bring them to the
    documents of `emr_config/iam/`; returns their ARNs and the launcher policy's default version."""
    iam = session.client("iam")
    values = {
        "bucket": bucket,
        "region": session.region_name,
        "account_id": session.client("sts").get_caller_identity()["Account"],
    }
    roles = {SERVICE_ROLE: "emr-service-role.trust.json", INSTANCE_ROLE: "instance-role.trust.json"}
    for role, trust in roles.items():
        _setup_role(iam, role, render_document(f"iam/{trust}", **values))
    for role, arns in render_document("iam/managed-policies.json").items():
        for arn in arns:
            iam.attach_role_policy(RoleName=role, PolicyArn=arn)
    iam.put_role_policy(
        RoleName=INSTANCE_ROLE,
        PolicyName="fruits-data",
        PolicyDocument=json.dumps(render_document("iam/instance-role.policy.json", **values)),
    )
    account = values["account_id"]
    launcher_arn = f"arn:aws:iam::{account}:policy/{LAUNCHER_POLICY}"
    launcher = render_document("iam/launcher.policy.json", **values)
    version = _setup_managed_policy(iam, launcher_arn, LAUNCHER_POLICY, launcher)
    _setup_instance_profile(iam)  # last: a conflict there leaves everything else up to date
    return {
        "service_role": f"arn:aws:iam::{account}:role/{SERVICE_ROLE}",
        "instance_role": f"arn:aws:iam::{account}:role/{INSTANCE_ROLE}",
        "instance_profile": f"arn:aws:iam::{account}:instance-profile/{INSTANCE_PROFILE}",
        "launcher_policy": launcher_arn,
        "launcher_policy_version": version,
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
