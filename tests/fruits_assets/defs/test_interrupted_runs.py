"""A materialization killed half-way (its whole process group SIGKILLed while it writes an output) leaves the
previous materialization of the class readable and unchanged, and the next run completes and cleans up."""

import os
import signal
import subprocess
import time
from pathlib import Path

from dagster import AssetKey, materialize

from fruits_assets.defs.assets.features import image_embeddings
from fruits_assets.defs.assets.ingestion import raw_images
from spark_code.storage.parquet_store import read_classes
from spark_code.storage.publish import leftovers, pointers, recover, version_of
from tests.conftest import REPO, copy_sample, driver_command
from tests.fruits_assets.conftest import make_instance, make_resources
from tests.images_factory import BAD_IMAGES, GOOD_IMAGES, write_files

CLASS = "Kiwi"
OUTPUTS = ("raw_images", "image_embeddings", "rejected_images")
DRIVER_LIMIT_S = 300


def _materialize(images_root: Path, output_root: Path) -> None:
    result = materialize(
        [raw_images, image_embeddings],
        selection=[AssetKey(name) for name in OUTPUTS],
        partition_key=CLASS,
        resources=make_resources(images_root, output_root),
        instance=make_instance([CLASS]),
    )
    assert result.success


def _snapshot(spark, output_root: Path) -> dict[str, list]:
    return {
        name: sorted(map(tuple, read_classes(spark, str(output_root / name), [CLASS]).collect()), key=str)
        for name in OUTPUTS
    }


def _staged_files(folder: Path) -> list[Path]:
    """Files of versions that no pointer names yet: a writer's output before it publishes."""
    return [f for location in leftovers(str(folder)) for f in (folder / location).rglob("*") if f.is_file()]


def _kill_once_staged(process: subprocess.Popen, folder: Path) -> None:
    """SIGKILL the driver's process group (driver, JVM, Python workers) once an unpublished version has files."""
    deadline = time.monotonic() + DRIVER_LIMIT_S
    while not _staged_files(folder):
        assert process.poll() is None, f"the run ended (code {process.returncode}) before writing {folder}"
        assert time.monotonic() < deadline, f"no unpublished output under {folder} within {DRIVER_LIMIT_S} s"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def test_a_run_killed_while_writing_leaves_the_previous_output_and_the_next_run_completes(spark, small_root, tmp_path):
    images = copy_sample(small_root, tmp_path / "images", [CLASS], {"Training": 6, "Test": 2})
    output_root = tmp_path / "out"
    _materialize(images, output_root)
    before = _snapshot(spark, output_root)
    assert len(before["image_embeddings"]) == 8 and before["rejected_images"] == []

    # The next run has more to write: two good and one bad file, so its output cannot be mistaken for the old one.
    write_files(images / "Training" / CLASS, {"new.jpg": GOOD_IMAGES["rgb.jpg"], "new.png": GOOD_IMAGES["alpha.png"]})
    write_files(images / "Test" / CLASS, {"broken.jpg": BAD_IMAGES["truncated.jpg"]})
    with (tmp_path / "killed.log").open("wb") as log:
        process = subprocess.Popen(
            driver_command(images, output_root, [CLASS]), cwd=REPO, stdout=log, stderr=log, start_new_session=True
        )
        _kill_once_staged(process, output_root / "raw_images")
    assert process.returncode == -signal.SIGKILL
    assert _staged_files(output_root / "raw_images"), "the kill must leave a half-written version"
    assert _snapshot(spark, output_root) == before
    published = {name: sorted({version_of(p) for p in pointers(str(output_root / name)).values()}) for name in OUTPUTS}

    _materialize(images, output_root)
    after = _snapshot(spark, output_root)
    assert len(after["image_embeddings"]) == 10 and len(after["rejected_images"]) == 1
    old, new = ({row[0]: row[3] for row in rows} for rows in (before["image_embeddings"], after["image_embeddings"]))
    assert all(new[path] == features for path, features in old.items())
    # The killed run's versions are deleted at once (a dead process of this host); the versions the last run replaced
    # are kept for readers for the grace period (tests/spark_code/storage/test_publish.py), then deleted.
    assert {name: leftovers(str(output_root / name)) for name in OUTPUTS} == published
    assert all(recover(str(output_root / name), grace=0) == published[name] for name in OUTPUTS)
    assert [location for name in OUTPUTS for location in leftovers(str(output_root / name))] == []


def test_a_run_killed_between_the_embeddings_and_the_rejected_images_is_repaired_by_the_next_run(
    spark, small_root, tmp_path
):
    """The two outputs of image_embeddings are published one after the other: a kill in between leaves the new
    embeddings beside the previous rejected images (each output whole, never a part); the next run makes them agree."""
    images = copy_sample(small_root, tmp_path / "images", [CLASS], {"Training": 6, "Test": 2})  # 1 bad in 10
    output_root = tmp_path / "out"
    _materialize(images, output_root)
    before = _snapshot(spark, output_root)
    write_files(images / "Training" / CLASS, {"new.jpg": GOOD_IMAGES["rgb.jpg"], "broken.jpg": BAD_IMAGES["text.jpg"]})
    marker = tmp_path / "published"
    command = driver_command(images, output_root, [CLASS], hang_after=("image_embeddings", marker))
    with (tmp_path / "killed.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + DRIVER_LIMIT_S
        while not marker.exists():
            assert process.poll() is None, f"the run ended (code {process.returncode}) before publishing"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    between = _snapshot(spark, output_root)
    assert len(between["image_embeddings"]) == 9  # the killed run's embeddings, new.jpg included
    assert between["rejected_images"] == before["rejected_images"] == []  # broken.jpg not yet recorded
    assert between["raw_images"] != before["raw_images"]

    _materialize(images, output_root)
    after = _snapshot(spark, output_root)
    assert after["image_embeddings"] == between["image_embeddings"]
    assert [row[0].rsplit("/", 1)[1] for row in after["rejected_images"]] == ["broken.jpg"]
    assert len(after["raw_images"]) == len(after["image_embeddings"]) + len(after["rejected_images"]) == 10
