"""Input and security: partition keys cannot lead outside the roots, and no credential reaches the repository, the
logs, the Dagster event log or metadata, or the outputs."""

import os
import re
import subprocess
from pathlib import Path

import pytest
from dagster import DagsterEventType, materialize

from fruits_assets.assets.ingestion import raw_images
from tests.conftest import REPO, copy_sample, driver_command
from tests.fruits_assets.conftest import make_instance, make_resources

AWS_KEY_PATTERN = re.compile(rb"(?:AKIA|ASIA)[0-9A-Z]{16}")
# Built from parts so that this file itself holds no key-shaped string.
FAKE_KEY_ID = "AKIA" + "FRUITSFAKEKEY001"
FAKE_SECRET = "fruits/fake+secret/" + "Zq8" * 7
FAKE_TOKEN = "fruits-fake-session-token-" + "Yw3" * 8


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("key", ["..", "../../outside", "Kiwi/../../outside", ".hidden"])
def test_partition_keys_that_could_leave_the_roots_fail_without_touching_anything(small_root, tmp_path, key):
    output_root = tmp_path / "out"
    before, images_before = _tree(tmp_path), _tree(small_root)
    result = materialize(
        [raw_images],
        partition_key=key,
        resources=make_resources(small_root, output_root),
        instance=make_instance([key]),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "invalid class name" in failure.step_failure_data.user_failure_data.description
    assert not [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert _tree(tmp_path) == before and _tree(small_root) == images_before


def test_a_class_folder_linked_outside_the_images_root_fails_the_run(small_root, tmp_path):
    images = copy_sample(small_root, tmp_path / "images", ["Kiwi"], {"Training": 2})
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "secret.jpg").write_bytes(b"private")
    (images / "Training" / "Leak").symlink_to(tmp_path / "private", target_is_directory=True)
    result = materialize(
        [raw_images],
        partition_key="Leak",
        resources=make_resources(images, tmp_path / "out"),
        instance=make_instance(["Leak"]),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "leads outside the images root" in failure.step_failure_data.user_failure_data.description
    assert not (tmp_path / "out").exists()


def _files_holding(folder: Path, needles: list[bytes]) -> dict[str, list[bytes]]:
    found = {}
    for path in (p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits = [needle for needle in needles if needle in data]
        if hits:
            found[str(path)] = hits
    return found


def test_no_credential_reaches_logs_event_log_metadata_or_outputs(small_root, tmp_path):
    """A run in its own process with AWS credentials in its environment, on a Dagster instance on disk."""
    images = copy_sample(small_root, tmp_path / "images", ["Kiwi"], {"Training": 2, "Test": 1})
    home, output_root = tmp_path / "dagster_home", tmp_path / "out"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_SESSION_TOKEN": FAKE_TOKEN,
        "AWS_DEFAULT_REGION": "eu-west-3",
    }
    completed = subprocess.run(
        driver_command(images, output_root, ["Kiwi"]), cwd=REPO, env=env, capture_output=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")[-3000:]
    needles = [value.encode() for value in (FAKE_KEY_ID, FAKE_SECRET, FAKE_TOKEN)]
    # The places searched really hold the run's logs, event log and metadata.
    logs = completed.stdout + completed.stderr
    assert b"STEP_SUCCESS" in completed.stderr and b"files_indexed" in completed.stdout
    assert _files_holding(home, [b"files_indexed"]) and _files_holding(output_root, [b"Kiwi"])
    assert [needle for needle in needles if needle in logs] == []
    assert _files_holding(home, needles) == {}
    assert _files_holding(output_root, needles) == {}


def _tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [REPO / name for name in listed.decode().split("\0") if name]


def test_no_aws_key_is_committed():
    files = _tracked_files()
    assert len(files) > 20
    leaks = {str(p.relative_to(REPO)): AWS_KEY_PATTERN.findall(p.read_bytes()) for p in files if p.is_file()}
    assert {name: keys for name, keys in leaks.items() if keys} == {}
