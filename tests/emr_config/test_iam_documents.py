"""The IAM documents grant only what the pipeline uses, on the project's bucket and prefixes; the bucket is private."""

import fnmatch
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from fruits_assets.cli import main
from fruits_assets.emr import cli as emr_cli
from fruits_assets.emr.cluster import EMR_CONFIG, INSTANCE_PROFILE, INSTANCE_ROLE, render_document
from spark_code.storage.publish import POINTERS, PUBLISHED, VERSIONS, WHOLE
from tests.conftest import WEIGHTS
from tests.fruits_assets.defs.test_step_launcher import CLASS, LAUNCH, moto_step

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


def missing_key_reads_as_404(bucket_arn: str) -> tuple[str, str, dict[str, str]]:
    """What a read (GetObject, HeadObject) of a key that does not exist needs to be answered 404 NoSuchKey: S3 says
    so only to a caller allowed s3:ListBucket on the bucket, and answers 403 AccessDenied to others
    (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html, "Permissions"). A read carries no s3:prefix,
    so a ListBucket grant conditioned on prefixes does not apply to it: the context is empty."""
    return ("s3:ListBucket", bucket_arn, {})


MISSING_KEY_READS = {
    "iam/launcher.policy.json": [
        # dagster-aws's step launcher polls the step's events before the step has written them, and takes only
        # NoSuchKey for "not yet" (PySparkStepLauncher.read_events); its log waiter retries only on 404.
        "staging/run-id/step-key/events.pkl",
        "logs/j-CLUSTER/steps/s-STEP/stdout.gz",
    ],
    "iam/instance-role.policy.json": [
        # spark_code.storage.publish on the driver: a part's pointer before its first publication (storage.read_text
        # is None only on a 404), the marker of a version not yet published (storage.exists).
        f"outputs/features/{POINTERS}/{WHOLE}",
        f"outputs/features/{VERSIONS}/tag.1@host/{PUBLISHED}",
        # Spark/EMRFS/Hadoop's existence check of an output path before writing (a HEAD of the key).
        f"outputs/features/{VERSIONS}/tag.1@host/label=Kiwi",
    ],
}
"""Keys each principal reads that may not exist (yet), and where."""


@pytest.mark.parametrize("name", POLICIES)
def test_a_missing_key_reads_as_404_for_whoever_reads_keys_that_may_not_exist(name):
    assert sorted(MISSING_KEY_READS) == POLICIES
    document = render_document(name, **VALUES)
    bucket_arn = f"arn:aws:s3:::{VALUES['bucket']}"
    for key in MISSING_KEY_READS[name]:
        assert allows(document, "s3:GetObject", f"{bucket_arn}/{key}", {}), f"{name} cannot read {key}"
        action, resource, context = missing_key_reads_as_404(bucket_arn)
        assert allows(document, action, resource, context), (
            f"{name}: a read of {key} before it exists is 403 AccessDenied, not 404 NoSuchKey, without {action} on "
            f"{resource} for a request with no s3:prefix"
        )


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


RECORDED_PARAMETERS = ("Bucket", "Key", "Prefix", "ClusterId", "JobFlowId", "ServiceRole", "JobFlowRole")
RECORDER = """
import json, os
import botocore.handlers

def _record(params, model, **_):
    call = {"service": model.service_model.service_name, "operation": model.name}
    call.update({name: params[name] for name in RECORDED_PARAMETERS if isinstance(params.get(name), str)})
    with open(os.environ["RECORD_AWS_CALLS_TO"], "a") as calls:
        calls.write(json.dumps(call) + "\\n")

botocore.handlers.BUILTIN_HANDLERS.append(("before-parameter-build", _record))
""".replace("RECORDED_PARAMETERS", repr(RECORDED_PARAMETERS))
"""A `sitecustomize` for the launching process and the step processes it spawns: every botocore session there writes
each API call it makes, with the parameters that name what it acts on, to $RECORD_AWS_CALLS_TO."""

S3_ACTIONS = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "ListObjects": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "GetBucketLocation": "s3:GetBucketLocation",
}
"""The IAM action each S3 operation needs (https://docs.aws.amazon.com/AmazonS3/latest/API/API_Operations.html)."""


def required_permissions(call: dict) -> list[tuple[str, str, dict[str, str]]]:
    """(action, resource, condition keys) that IAM checks for a recorded call."""
    account, region = VALUES["account_id"], VALUES["region"]
    operation = call["operation"]
    if call["service"] == "emr":
        cluster = call.get("ClusterId") or call.get("JobFlowId") or "*"
        needed = [
            (f"elasticmapreduce:{operation}", f"arn:aws:elasticmapreduce:{region}:{account}:cluster/{cluster}", {})
        ]
        if operation == "RunJobFlow":  # the roles handed to EMR: the service role, the instance profile's role
            roles = {
                call["ServiceRole"],
                {INSTANCE_PROFILE: INSTANCE_ROLE}.get(call["JobFlowRole"], call["JobFlowRole"]),
            }
            needed += [("iam:PassRole", f"arn:aws:iam::{account}:role/{role}", {}) for role in sorted(roles)]
        return needed
    assert call["service"] == "s3", f"a call the policy test does not know: {call}"
    assert operation in S3_ACTIONS, f"map the S3 operation {operation} to its IAM action in S3_ACTIONS"
    action, bucket = S3_ACTIONS[operation], f"arn:aws:s3:::{call['Bucket']}"
    if "Key" in call:
        needed = [(action, f"{bucket}/{call['Key']}", {})]
        if action == "s3:GetObject":  # any read may be of a key not there (yet): events.pkl before the step ran
            needed.append(missing_key_reads_as_404(bucket))
        return needed
    return [(action, bucket, {"s3:prefix": call["Prefix"]} if "Prefix" in call else {})]


def allows(document: dict, action: str, resource: str, context: dict[str, str]) -> bool:
    """IAM's evaluation for documents that only allow: a statement matches the action, the resource and every
    condition (a condition on a key the request does not carry does not match)."""
    for statement in statements(document):
        if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in as_list(statement["Action"])):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in as_list(statement["Resource"])):
            continue
        matched = True
        for operator, tests in statement.get("Condition", {}).items():
            assert operator in ("StringLike", "StringEquals"), f"teach allows() the condition {operator}"
            for key, expected in tests.items():
                value = context.get(key)
                match = fnmatch.fnmatchcase if operator == "StringLike" else str.__eq__
                matched &= value is not None and any(match(value, pattern) for pattern in as_list(expected))
        if matched:
            return True
    return False


def read_calls(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def launch_one_step(tmp_path: Path, cluster_id: str, calls: Path) -> tuple[str, list[Path]]:
    """The prod launching process (dagster-aws's step launcher) for one class, recording its AWS calls. The test
    plays an EMR cluster that never runs the step: PENDING until the launcher has looked, then COMPLETED. Returns
    the launcher's output and the copies of the code package left in its temporary folder."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(RECORDER)
    dagster_home, temp = tmp_path / "dagster_home", tmp_path / "tmp"
    dagster_home.mkdir()
    temp.mkdir()
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith(("FRUITS_", "DAGSTER_"))},
        "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "RECORD_AWS_CALLS_TO": str(calls),
        "TMPDIR": str(temp),
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_DEPLOYMENT": "prod",
        "FRUITS_S3_BUCKET": VALUES["bucket"],
        "FRUITS_EMR_CLUSTER_ID": cluster_id,
        "FRUITS_EMR_POLL_SECONDS": "0.25",  # four looks a second, not dagster-aws's one per 15 s: the step is short
        "FRUITS_IMAGES_ROOT": str(tmp_path / "images"),
        "FRUITS_OUTPUT_ROOT": str(tmp_path / "out"),
        "FRUITS_MODEL_WEIGHTS": str(WEIGHTS),
        "FRUITS_MODEL_ALPHA": "0.35",
    }
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, CLASS], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    emr = boto3.client("emr")
    deadline = time.monotonic() + 240
    step_id = None
    while launcher.poll() is None and time.monotonic() < deadline:
        if step_id is None:
            steps = emr.list_steps(ClusterId=cluster_id)["Steps"]
            if steps:
                (step,) = steps
                step_id = step["Id"]
                moto_step(cluster_id, step_id).state = "PENDING"
        elif any(call["operation"] == "DescribeCluster" for call in read_calls(calls)):
            moto_step(cluster_id, step_id).state = "COMPLETED"
        time.sleep(0.25)
    if launcher.poll() is None:
        launcher.kill()
    output = launcher.communicate()[0]
    assert step_id is not None, output[-3000:]
    return output, sorted(temp.glob("fruits-emr-code-*"))


def test_launcher_policy_allows_every_call_of_the_cli_and_the_step_launcher(aws, monkeypatch, capsys, tmp_path):
    """Record every AWS call that `fruits emr up/status/down` and dagster-aws's step launcher make against the
    loopback server: the launcher policy allows each of them, and grants no EMR action that none of them uses."""
    cli_calls: list[dict] = []
    real_session = emr_cli._session

    def record(params, model, **_):
        call = {"service": model.service_model.service_name, "operation": model.name}
        cli_calls.append({**call, **{k: params[k] for k in RECORDED_PARAMETERS if isinstance(params.get(k), str)}})

    def recording_session(args):
        session = real_session(args)
        session.events.register("before-parameter-build", record, unique_id="record-aws-calls")
        return session

    monkeypatch.setattr(emr_cli, "_session", recording_session)
    bucket = VALUES["bucket"]
    boto3.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert main(["emr", "up", "--bucket", bucket, "--json"]) == 0
    cluster_id = json.loads(capsys.readouterr().out)["id"]
    assert main(["emr", "status", cluster_id]) == 0

    launcher_calls = tmp_path / "launcher-calls.jsonl"
    output, code_copies = launch_one_step(tmp_path, cluster_id, launcher_calls)
    step_calls = read_calls(launcher_calls)
    staged = {call.get("Key", "").rsplit("/", 1)[-1] for call in step_calls if call["operation"] == "PutObject"}
    assert {"emr_step_main.py", "code.zip", "step_run_ref.pkl"} <= staged, output[-3000:]
    assert {"AddJobFlowSteps", "DescribeStep", "DescribeCluster", "GetObject"} <= {c["operation"] for c in step_calls}
    # The step never ran here, so the launcher polled events it had not written: reads of a missing key.
    polled = [c for c in step_calls if c["operation"] == "GetObject" and c["Key"].endswith("/events.pkl")]
    assert polled, output[-3000:]

    assert main(["emr", "down", cluster_id]) == 0
    document = render_document("iam/launcher.policy.json", **VALUES)
    used = set()
    for call in cli_calls + step_calls:
        for action, resource, context in required_permissions(call):
            assert allows(document, action, resource, context), f"{call} needs {action} on {resource} {context}"
            used.add(action)
    granted = {a for a in allowed_actions("iam/launcher.policy.json") if a.startswith("elasticmapreduce:")}
    assert {a for a in used if a.startswith("elasticmapreduce:")} == granted
    # The launching process and its step process each zipped a copy of the packages, and removed it at exit.
    assert code_copies == [], "a copy of the code package outlived its process"
