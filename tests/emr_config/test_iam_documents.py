"""The IAM documents grant only what the pipeline uses, on the project's bucket and prefixes; the bucket is private."""

import json

import boto3
import pytest

from fruits_assets import emr_cli
from fruits_assets.cli import main
from fruits_assets.emr_cluster import EMR_CONFIG, render_document

VALUES = {"bucket": "fruits-bucket", "account_id": "123456789012", "region": "eu-west-1"}
PREFIXES = ("images/", "outputs/", "staging/", "code/", "models/", "logs/")
POLICIES = sorted(path.relative_to(EMR_CONFIG).as_posix() for path in (EMR_CONFIG / "iam").glob("*.policy.json"))


def statements(document: dict) -> list[dict]:
    found = document["Statement"]
    return found if isinstance(found, list) else [found]


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def allowed_actions(name: str) -> set[str]:
    document = render_document(name, **VALUES)
    return {a for s in statements(document) if s["Effect"] == "Allow" for a in as_list(s["Action"])}


def test_there_are_policies_to_check():
    assert POLICIES == ["iam/instance-role.policy.json", "iam/launcher.policy.json"]


@pytest.mark.parametrize("name", POLICIES)
def test_no_wildcard_action_or_resource(name):
    for statement in statements(render_document(name, **VALUES)):
        assert statement["Effect"] == "Allow", "policies here only grant"
        assert "NotAction" not in statement and "NotResource" not in statement
        for action in as_list(statement["Action"]):
            service, operation = action.split(":")
            assert "*" not in operation, f"{name}: wildcard action {action}"
        for resource in as_list(statement["Resource"]):
            assert resource != "*", f"{name}: statement {statement.get('Sid')} grants on every resource"
            assert resource.split(":")[4] in ("", VALUES["account_id"]), f"{name}: another account in {resource}"


@pytest.mark.parametrize("name", POLICIES)
def test_s3_grants_stay_in_the_project_bucket_and_prefixes(name):
    bucket_arn = f"arn:aws:s3:::{VALUES['bucket']}"
    for statement in statements(render_document(name, **VALUES)):
        s3_actions = [a for a in as_list(statement["Action"]) if a.startswith("s3:")]
        if not s3_actions:
            continue
        for resource in as_list(statement["Resource"]):
            if resource == bucket_arn:
                assert set(s3_actions) <= {"s3:ListBucket", "s3:GetBucketLocation"}
                if "s3:ListBucket" in s3_actions:
                    listed = as_list(statement["Condition"]["StringLike"]["s3:prefix"])
                    assert all(prefix.startswith(PREFIXES) for prefix in listed)
            else:
                key = resource.removeprefix(bucket_arn + "/")
                assert key != resource and key.startswith(PREFIXES), f"{name}: {resource} is outside the prefixes"


def test_nodes_write_only_outputs_staging_and_logs():
    document = render_document("iam/instance-role.policy.json", **VALUES)
    writes = {
        resource
        for s in statements(document)
        if {"s3:PutObject", "s3:DeleteObject"} & set(as_list(s["Action"]))
        for resource in as_list(s["Resource"])
    }
    bucket = VALUES["bucket"]
    assert writes == {f"arn:aws:s3:::{bucket}/{prefix}*" for prefix in ("outputs/", "staging/", "logs/")}
    assert allowed_actions("iam/instance-role.policy.json") == {
        "s3:ListBucket",
        "s3:GetBucketLocation",
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
    }


def test_the_launcher_passes_only_the_project_roles():
    document = render_document("iam/launcher.policy.json", **VALUES)
    (passing,) = [s for s in statements(document) if "iam:PassRole" in as_list(s["Action"])]
    assert sorted(as_list(passing["Resource"])) == [
        "arn:aws:iam::123456789012:role/fruits-emr-instance-role",
        "arn:aws:iam::123456789012:role/fruits-emr-service-role",
    ]


def test_bucket_settings_block_public_access_and_encrypt():
    settings = json.loads((EMR_CONFIG / "bucket.json").read_text())
    block = settings["PublicAccessBlockConfiguration"]
    assert set(block) == {"BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"}
    assert all(value is True for value in block.values())
    (rule,) = settings["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    (deny,) = settings["Policy"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


EMR_OPERATIONS_OF_THE_STEP_LAUNCHER = {"AddJobFlowSteps", "DescribeStep", "DescribeCluster"}
"""dagster-aws's EmrJobRunner: add_job_flow_steps, then describe_step (and describe_cluster while PENDING)."""


def test_launcher_policy_covers_exactly_the_emr_calls_made(aws, monkeypatch, capsys):
    """Record every EMR API call `fruits emr up/status/down` makes against the loopback server; together with the
    step launcher's calls they must be exactly the EMR actions the launcher policy grants."""
    called: set[str] = set()
    real_session = emr_cli._session

    def recording_session(args):
        session = real_session(args)
        session.events.register(
            "before-call.emr", lambda model, **_: called.add(model.name), unique_id="record-emr-calls"
        )
        return session

    monkeypatch.setattr(emr_cli, "_session", recording_session)
    bucket = "fruits-policy-test"
    boto3.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert main(["emr", "up", "--bucket", bucket, "--json"]) == 0
    cluster_id = json.loads(capsys.readouterr().out)["id"]
    assert main(["emr", "status", cluster_id]) == 0
    assert main(["emr", "down", cluster_id]) == 0
    used = {f"elasticmapreduce:{name}" for name in called | EMR_OPERATIONS_OF_THE_STEP_LAUNCHER}
    granted = {a for a in allowed_actions("iam/launcher.policy.json") if a.startswith("elasticmapreduce:")}
    assert used == granted
