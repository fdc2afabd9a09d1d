"""Input and security: partition keys cannot lead outside the roots, and no credential reaches the repository, the
logs, the Dagster event log or metadata, or the outputs."""

import fnmatch
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from dagster import DagsterEventType, materialize

from fruits_assets.defs.assets.ingestion import raw_images
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


@pytest.mark.slow
def test_no_credential_reaches_logs_event_log_metadata_or_outputs(small_root, tmp_path):
    """A run in its own process with AWS credentials in its environment, on a Dagster instance on disk."""
    images = copy_sample(small_root, tmp_path / "images", ["Kiwi"], {"Training": 2, "Test": 1})
    home, output_root = tmp_path / "dagster_home", tmp_path / "out"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "FRUITS_DRIVER_ON_DISK": "1",
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


SIMPLE_IGNORE = re.compile(r"[^/!#\\]+/?")
"""The .gitignore lines _files_on_disk understands: a name or glob matched at any depth, a final / for folders only."""


def _tracked_files(root: Path) -> list[Path] | None:
    """git's tracked files under root, or None when root is not the top of a git checkout (or git is missing)."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, check=True)
        if Path(top.stdout.decode().strip()).resolve() != root.resolve():
            return None
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [root / name for name in listed.decode().split("\0") if name]


def _files_on_disk(root: Path) -> set[Path]:
    """Every file under root that git would track: all but .git and what root/.gitignore ignores."""
    ignore = root / ".gitignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert [p for p in patterns if not SIMPLE_IGNORE.fullmatch(p)] == [], "patterns this scan cannot read"

    def ignored(name: str, folder: bool) -> bool:
        return any(fnmatch.fnmatch(name, p.rstrip("/")) and (folder or not p.endswith("/")) for p in patterns)

    files = set()
    for parent, folders, names in os.walk(root):
        folders[:] = [f for f in folders if f != ".git" and not ignored(f, folder=True)]
        files |= {Path(parent) / name for name in names if not ignored(name, folder=False)}
    return files


def _committable_files(root: Path) -> set[Path]:
    """The tracked files and those git would track, in a checkout; the files on disk git would track elsewhere (a
    source archive, a copy without .git), so the scan never depends on git being there."""
    on_disk = _files_on_disk(root)
    tracked = _tracked_files(root)
    if tracked is not None:
        # The disk scan sees every tracked file: it is what runs where there is no checkout.
        assert {p for p in tracked if p.is_file()} - on_disk == set()
        on_disk |= set(tracked)
    return {p for p in on_disk if p.is_file()}


def _aws_keys(files: set[Path], root: Path) -> dict[str, list[bytes]]:
    leaks = {str(p.relative_to(root)): AWS_KEY_PATTERN.findall(p.read_bytes()) for p in files}
    return {name: keys for name, keys in leaks.items() if keys}


def test_no_aws_key_is_committed():
    files = _committable_files(REPO)
    assert len(files) > 20
    assert _aws_keys(files, REPO) == {}


def test_outside_a_checkout_every_file_git_would_track_is_scanned(tmp_path):
    """A copy without .git, with the repository's own .gitignore: ignored folders and files are left out, a planted
    key in any other file is found."""
    root = tmp_path / "copy"
    files = {
        "fruits_assets/leak.py": FAKE_KEY_ID,
        "docs/notes.md": "nothing here",
        ".ci/deep/er/config.env": FAKE_KEY_ID,
        ".venv/lib/site.py": FAKE_KEY_ID,
        "spark_code/__pycache__/x.pyc": FAKE_KEY_ID,
        "fruits.egg-info/PKG-INFO": FAKE_KEY_ID,
        "build/lib/a.py": FAKE_KEY_ID,
        "derby.log": FAKE_KEY_ID,
        "sub/derby.log": FAKE_KEY_ID,
        ".tmp_dagster_home_1/run.db": FAKE_KEY_ID,
        ".git/config": FAKE_KEY_ID,
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    assert _tracked_files(root) is None
    found = _committable_files(root)
    assert {str(p.relative_to(root)) for p in found} == {
        ".gitignore",
        "fruits_assets/leak.py",
        "docs/notes.md",
        ".ci/deep/er/config.env",
    }
    assert _aws_keys(found, root) == {
        "fruits_assets/leak.py": [FAKE_KEY_ID.encode()],
        ".ci/deep/er/config.env": [FAKE_KEY_ID.encode()],
    }
