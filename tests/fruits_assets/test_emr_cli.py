"""`fruits emr` against a real S3/EMR/IAM API server on loopback (moto's server mode)."""

import json

import boto3
import pytest
from botocore.exceptions import ClientError

from fruits_assets.cli import main
from fruits_assets.emr_cluster import CODE_FILES, EMR_CONFIG, INSTANCE_PROFILE, INSTANCE_ROLE, SERVICE_ROLE

BUCKET = "fruits-test-bucket"


def run_json(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    assert main(["emr", *argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


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
    # A second setup finds everything in place and changes nothing.
    assert run_json(capsys, "setup", "--bucket", BUCKET) == created
    # The policy is enforced: the loopback server speaks plain HTTP, so every write is refused.
    with pytest.raises(ClientError, match="Forbidden"):
        s3.put_object(Bucket=BUCKET, Key="images/Training/Kiwi/1.jpg", Body=b"x")


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
