"""A materialization killed half-way (its whole process group SIGKILLed while it writes an output) leaves the
previous materialization of the class readable and unchanged, and the next run completes and cleans up."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
from dagster import AssetKey, materialize
from delta.tables import DeltaTable

from fruits_assets.defs.assets.features import image_embeddings
from fruits_assets.defs.assets.ingestion import raw_images
from spark_code.storage.class_tables import open_table, read_classes
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


def _parquet(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*.parquet") if "_delta_log" not in path.parts}


def _kill_once_staged(process: subprocess.Popen, folder: Path, existing: set[Path]) -> None:
    """SIGKILL the driver's process group (driver, JVM, Python workers) once it has written a data file of the table
    in `folder` (Delta writes them in place, and commits them after)."""
    deadline = time.monotonic() + DRIVER_LIMIT_S
    while not _parquet(folder) - existing:
        assert process.poll() is None, f"the run ended (code {process.returncode}) before writing {folder}"
        assert time.monotonic() < deadline, f"no new data file under {folder} within {DRIVER_LIMIT_S} s"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def _vacuumed(spark, folder: Path) -> tuple[int, int]:
    """VACUUM with no retention: the table's data files left, and those its newest version names."""
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        DeltaTable.forPath(spark, str(folder)).vacuum(0)
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
    return len(_parquet(folder)), pa.table(open_table(str(folder)).get_add_actions()).num_rows


def test_a_run_killed_while_writing_leaves_the_previous_output_and_the_next_run_completes(spark, small_root, tmp_path):
    images = copy_sample(small_root, tmp_path / "images", [CLASS], {"Training": 6, "Test": 2})
    output_root = tmp_path / "out"
    _materialize(images, output_root)
    before = _snapshot(spark, output_root)
    assert len(before["image_embeddings"]) == 8 and before["rejected_images"] == []

    # The next run has more to write: two good and one bad file, so its output cannot be mistaken for the old one.
    write_files(images / "Training" / CLASS, {"new.jpg": GOOD_IMAGES["rgb.jpg"], "new.png": GOOD_IMAGES["alpha.png"]})
    write_files(images / "Test" / CLASS, {"broken.jpg": BAD_IMAGES["truncated.jpg"]})
    existing = _parquet(output_root / "raw_images")
    versions = {name: open_table(str(output_root / name)).version() for name in OUTPUTS}
    with (tmp_path / "killed.log").open("wb") as log:
        process = subprocess.Popen(
            driver_command(images, output_root, [CLASS]), cwd=REPO, stdout=log, stderr=log, start_new_session=True
        )
        _kill_once_staged(process, output_root / "raw_images", existing)
    assert process.returncode == -signal.SIGKILL
    assert _parquet(output_root / "raw_images") - existing, "the kill must leave files no commit names"
    assert _snapshot(spark, output_root) == before
    assert {name: open_table(str(output_root / name)).version() for name in OUTPUTS} == versions, "nothing committed"

    _materialize(images, output_root)
    after = _snapshot(spark, output_root)
    assert len(after["image_embeddings"]) == 10 and len(after["rejected_images"]) == 1
    old, new = ({row[0]: row[3] for row in rows} for rows in (before["image_embeddings"], after["image_embeddings"]))
    assert all(new[path] == features for path, features in old.items())
    # The killed run's files, and those the last run replaced, stay until VACUUM deletes them past the tables'
    # retention (spark_code.storage.class_tables); with none, only what the newest versions name is left.
    assert all(left == named for left, named in (_vacuumed(spark, output_root / name) for name in OUTPUTS))


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
