"""`fruits emr` against a real S3/EMR/IAM API server on loopback (moto's server mode)."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from fruits_assets.cli import main
from fruits_assets.emr import cluster as emr_cluster
from fruits_assets.emr.cluster import (
    CODE_FILES,
    EMR_CONFIG,
    INSTANCE_PROFILE,
    INSTANCE_ROLE,
    LAUNCHER_POLICY,
    SERVICE_ROLE,
    render_document,
)

BUCKET = "fruits-test-bucket"
ACCOUNT = "123456789012"
"""moto's default account."""


def run_json(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    assert main(["emr", *argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def aws_state() -> dict:
    """Everything setup makes, as AWS holds it: ids, documents, versions, attachments and bucket settings."""
    iam, s3 = boto3.client("iam"), boto3.client("s3")
    policies = {}
    for page in iam.get_paginator("list_policies").paginate(Scope="Local"):
        for policy in page["Policies"]:
            arn = policy["Arn"]
            versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
            default = iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])["PolicyVersion"]
            policies[policy["PolicyName"]] = {
                "id": policy["PolicyId"],
                "default": policy["DefaultVersionId"],
                "document": default["Document"],
                "versions": sorted(version["VersionId"] for version in versions),
                "attachments": policy["AttachmentCount"],
            }
    roles = {}
    for page in iam.get_paginator("list_roles").paginate():
        for listed in page["Roles"]:
            name = listed["RoleName"]
            role = iam.get_role(RoleName=name)["Role"]
            roles[name] = {
                "id": role["RoleId"],
                "trust": role["AssumeRolePolicyDocument"],
                "attached": sorted(
                    p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
                ),
                "inline": {
                    policy: iam.get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]
                    for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]
                },
            }
    profiles = {
        profile["InstanceProfileName"]: {
            "id": profile["InstanceProfileId"],
            "roles": [r["RoleName"] for r in profile["Roles"]],
        }
        for profile in iam.list_instance_profiles()["InstanceProfiles"]
    }
    buckets = {
        bucket["Name"]: {
            "location": s3.get_bucket_location(Bucket=bucket["Name"])["LocationConstraint"],
            "block": s3.get_public_access_block(Bucket=bucket["Name"])["PublicAccessBlockConfiguration"],
            "encryption": s3.get_bucket_encryption(Bucket=bucket["Name"])["ServerSideEncryptionConfiguration"],
            "policy": json.loads(s3.get_bucket_policy(Bucket=bucket["Name"])["Policy"]),
        }
        for bucket in s3.list_buckets()["Buckets"]
    }
    return {"policies": policies, "roles": roles, "instance_profiles": profiles, "buckets": buckets}


def edit_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, edit: Callable[[dict], None]) -> None:
    """emr_config/ as a person would change it: a copy with one JSON document edited, in place of the original."""
    config = tmp_path / "emr_config"
    if not config.is_dir():
        shutil.copytree(EMR_CONFIG, config)
    document = json.loads((config / name).read_text())
    edit(document)
    (config / name).write_text(json.dumps(document, indent=2))
    monkeypatch.setattr(emr_cluster, "EMR_CONFIG", config)


def launcher_policy() -> tuple[str, dict, list[str]]:
    """The launcher policy's default version id and document, and all its version ids."""
    iam = boto3.client("iam")
    arn = f"arn:aws:iam::{ACCOUNT}:policy/{LAUNCHER_POLICY}"
    default = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=arn, VersionId=default)["PolicyVersion"]["Document"]
    versions = sorted(v["VersionId"] for v in iam.list_policy_versions(PolicyArn=arn)["Versions"])
    return default, document, versions


def rendered(name: str) -> dict:
    return render_document(name, bucket=BUCKET, account_id=ACCOUNT, region="eu-west-1")


def test_setup_makes_a_private_encrypted_bucket_and_the_roles(aws, capsys):
    created = run_json(capsys, "setup", "--bucket", BUCKET)
    assert created["bucket"] == f"s3://{BUCKET}"
    s3 = boto3.client("s3")
    assert s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == "eu-west-1"
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    rule = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    policy = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    iam = boto3.client("iam")
    trust = iam.get_role(RoleName=SERVICE_ROLE)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "elasticmapreduce.amazonaws.com"}
    profile = iam.get_instance_profile(InstanceProfileName=INSTANCE_PROFILE)["InstanceProfile"]
    assert [role["RoleName"] for role in profile["Roles"]] == [INSTANCE_ROLE]
    inline = iam.get_role_policy(RoleName=INSTANCE_ROLE, PolicyName="fruits-data")["PolicyDocument"]
    assert f"arn:aws:s3:::{BUCKET}/outputs/*" in json.dumps(inline)
    # A second setup finds everything in place and changes nothing: same ids, documents, versions, attachments.
    before = aws_state()
    assert before["policies"][LAUNCHER_POLICY]["versions"] == ["v1"]
    assert set(before["roles"]) == {SERVICE_ROLE, INSTANCE_ROLE}
    assert run_json(capsys, "setup", "--bucket", BUCKET) == created
    assert aws_state() == before
    # The policy is enforced: the loopback server speaks plain HTTP, so every write is refused.
    with pytest.raises(ClientError, match="Forbidden"):
        s3.put_object(Bucket=BUCKET, Key="images/Training/Kiwi/1.jpg", Body=b"x")


def test_an_edited_launcher_policy_is_published_as_a_new_default_version(aws, capsys, tmp_path, monkeypatch):
    run_json(capsys, "setup", "--bucket", BUCKET)
    assert launcher_policy() == ("v1", rendered("iam/launcher.policy.json"), ["v1"])

    def drop_terminate(document: dict) -> None:
        document["Statement"][0]["Action"].remove("elasticmapreduce:TerminateJobFlows")

    edit_config(tmp_path, monkeypatch, "iam/launcher.policy.json", drop_terminate)
    assert run_json(capsys, "setup", "--bucket", BUCKET)["launcher_policy_version"] == "v2"
    default, document, versions = launcher_policy()
    assert (default, versions) == ("v2", ["v1", "v2"])
    assert document == rendered("iam/launcher.policy.json")
    assert "elasticmapreduce:TerminateJobFlows" not in json.dumps(document)
    # Unchanged again: no new version.
    run_json(capsys, "setup", "--bucket", BUCKET)
    assert launcher_policy()[0::2] == ("v2", ["v1", "v2"])

    # IAM keeps 5 versions: each further edit removes the oldest one that is not the default.
    for edit in range(3, 8):

        def rename(document: dict, edit: int = edit) -> None:
            document["Statement"][0]["Sid"] = f"ManageProjectClusters{edit}"

        edit_config(tmp_path, monkeypatch, "iam/launcher.policy.json", rename)
        run_json(capsys, "setup", "--bucket", BUCKET)
        default, document, versions = launcher_policy()
        assert default == f"v{edit}" and document == rendered("iam/launcher.policy.json")
        assert versions == sorted(f"v{n}" for n in range(max(1, edit - 4), edit + 1))


def test_an_edited_trust_policy_reaches_the_role(aws, capsys, tmp_path, monkeypatch):
    run_json(capsys, "setup", "--bucket", BUCKET)

    def only_this_account(document: dict) -> None:
        document["Statement"][0]["Condition"] = {"StringEquals": {"aws:SourceAccount": "${account_id}"}}

    edit_config(tmp_path, monkeypatch, "iam/instance-role.trust.json", only_this_account)
    role_id = boto3.client("iam").get_role(RoleName=INSTANCE_ROLE)["Role"]["RoleId"]
    run_json(capsys, "setup", "--bucket", BUCKET)
    role = boto3.client("iam").get_role(RoleName=INSTANCE_ROLE)["Role"]
    assert role["AssumeRolePolicyDocument"] == rendered("iam/instance-role.trust.json")
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": ACCOUNT}
    }
    assert role["RoleId"] == role_id  # updated, not recreated


def test_an_instance_profile_holding_another_role_fails_setup_by_name(aws, capsys):
    iam = boto3.client("iam")
    trust = json.dumps(rendered("iam/instance-role.trust.json"))
    iam.create_role(RoleName="someone-elses-role", AssumeRolePolicyDocument=trust)
    iam.create_instance_profile(InstanceProfileName=INSTANCE_PROFILE)
    iam.add_role_to_instance_profile(InstanceProfileName=INSTANCE_PROFILE, RoleName="someone-elses-role")

    assert main(["emr", "setup", "--bucket", BUCKET]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fruits: error:"), err
    assert INSTANCE_PROFILE in err[0] and "someone-elses-role" in err[0] and INSTANCE_ROLE in err[0]
    profile = iam.get_instance_profile(InstanceProfileName=INSTANCE_PROFILE)["InstanceProfile"]
    assert [role["RoleName"] for role in profile["Roles"]] == ["someone-elses-role"]  # not taken over

    # Once its owner has taken the role out, setup puts the nodes' role in.
    iam.remove_role_from_instance_profile(InstanceProfileName=INSTANCE_PROFILE, RoleName="someone-elses-role")
    run_json(capsys, "setup", "--bucket", BUCKET)
    profile = iam.get_instance_profile(InstanceProfileName=INSTANCE_PROFILE)["InstanceProfile"]
    assert [role["RoleName"] for role in profile["Roles"]] == [INSTANCE_ROLE]


def test_up_status_down_against_the_loopback_server(aws, capsys):
    # A bucket without setup's TLS-only policy, which plain HTTP on loopback could not pass.
    boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    up = run_json(capsys, "up", "--bucket", BUCKET, "--core-instances", "3", "--instance-type", "m5.2xlarge")
    assert up["state"] == "WAITING" and up["release"] == "emr-7.10.0"
    cluster_id = up["id"]

    s3 = boto3.client("s3")
    for name in CODE_FILES:
        uploaded = s3.get_object(Bucket=BUCKET, Key=f"code/{name}")["Body"].read()
        assert uploaded == (EMR_CONFIG / name).read_bytes()
    emr = boto3.client("emr")
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["TerminationProtected"] is False
    assert cluster["LogUri"] == f"s3://{BUCKET}/logs/"
    assert cluster["ServiceRole"] == SERVICE_ROLE
    assert {app["Name"] for app in cluster["Applications"]} == {"Spark"}
    (bootstrap,) = emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
    assert bootstrap["ScriptPath"] == f"s3://{BUCKET}/code/bootstrap.sh"
    assert bootstrap["Args"] == [f"s3://{BUCKET}/code/requirements-emr.txt"]
    groups = {g["InstanceGroupType"]: g for g in emr.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]}
    assert groups["CORE"]["RequestedInstanceCount"] == 3 and groups["CORE"]["InstanceType"] == "m5.2xlarge"
    assert groups["MASTER"]["RequestedInstanceCount"] == 1

    assert run_json(capsys, "status", cluster_id)["state"] == "WAITING"
    assert run_json(capsys, "down", cluster_id)["state"] == "TERMINATED"


def test_missing_bucket_or_cluster_is_a_one_line_error(aws, capsys, monkeypatch):
    monkeypatch.delenv("FRUITS_S3_BUCKET", raising=False)
    assert main(["emr", "up"]) == 2
    assert "needs --bucket" in capsys.readouterr().err
    assert main(["emr", "status", "j-DOESNOTEXIST"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fruits: error:")
