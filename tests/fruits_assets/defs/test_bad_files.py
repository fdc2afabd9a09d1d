"""The bad-file corpus through a Dagster materialization: every good image embedded exactly once, every bad file
rejected with a reason, hidden files skipped, embedded + rejected = files seen, and no Spark task failed."""

import os
from pathlib import Path

import pytest
from dagster import AssetKey, materialize

from fruits_assets.defs.assets.features import image_embeddings
from fruits_assets.defs.assets.ingestion import raw_images
from spark_code.storage.class_tables import read_classes
from spark_code.storage.storage import qualify
from tests.conftest import copy_sample
from tests.fruits_assets.conftest import make_instance, make_resources
from tests.images_factory import BAD_IMAGES, GOOD_IMAGES, HIDDEN_FILES, ODD_NAMES, write_files

CLASS = 'Pêche "plate" d\'été'
BAD_NAMES = {*BAD_IMAGES, 'pâte "brisée" 2.png'}


@pytest.fixture(scope="module")
def corpus(small_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real Kiwi photos moved into a class with an awkward name, with every kind of good, bad and hidden file."""
    root = tmp_path_factory.mktemp("corpus")
    copy_sample(small_root, root, ["Kiwi"], {"Training": 3, "Test": 1})
    for split in ("Training", "Test"):
        (root / split / "Kiwi").rename(root / split / CLASS)
    folder = root / "Training" / CLASS
    write_files(folder, {**GOOD_IMAGES, **BAD_IMAGES, **HIDDEN_FILES, **ODD_NAMES})
    write_files(folder / "sub folder é", {"deep 'nested'.jpg": GOOD_IMAGES["rgb.jpg"], ".DS_Store": b"\x00"})
    return root


def _visible_files(root: Path) -> set[str]:
    """Relative paths of the files a person would count: hidden files and folders left out."""
    seen = set()
    for parent, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        seen |= {str((Path(parent) / f).relative_to(root)) for f in files if not f.startswith((".", "_"))}
    return seen


def _failed_tasks(spark, groups: list[str]) -> dict[str, int]:
    """Failed task attempts of every Spark job run under these job groups (an OOM-killed worker fails its task)."""
    tracker = spark.sparkContext.statusTracker()
    failed = {}
    for group in groups:
        jobs = [tracker.getJobInfo(job) for job in tracker.getJobIdsForGroup(group)]
        assert jobs, f"no Spark job ran under group {group!r}"
        stages = [tracker.getStageInfo(stage) for job in jobs for stage in job.stageIds]
        failed[group] = sum(stage.numFailedTasks for stage in stages if stage is not None)
        assert {job.status for job in jobs} == {"SUCCEEDED"}
    return failed


def test_bad_file_corpus_every_file_embedded_once_or_rejected_with_a_reason(spark, corpus, output_root):
    result = materialize(
        [raw_images, image_embeddings],
        selection=[AssetKey("raw_images"), AssetKey("image_embeddings"), AssetKey("rejected_images")],
        partition_key=CLASS,
        resources=make_resources(corpus, output_root, max_rejected_share=1.0),  # the corpus is 40% bad on purpose
        instance=make_instance([CLASS]),
        raise_on_error=False,
    )
    assert result.success
    assert all(check.passed for check in result.get_asset_check_evaluations())
    assert _failed_tasks(spark, ["raw_images", "image_embeddings"]) == {"raw_images": 0, "image_embeddings": 0}

    prefix = qualify(spark, str(corpus)) + "/"
    relative = lambda rows: [row["path"].removeprefix(prefix) for row in rows]  # noqa: E731
    embedded = relative(read_classes(spark, str(output_root / "image_embeddings"), [CLASS]).collect())
    rejected_rows = read_classes(spark, str(output_root / "rejected_images"), [CLASS]).collect()
    reasons = dict(zip(relative(rejected_rows), [row["reason"] for row in rejected_rows], strict=True))

    seen = _visible_files(corpus)
    bad = {path for path in seen if path.rsplit("/", 1)[-1] in BAD_NAMES}
    assert len(seen) == 4 + len(GOOD_IMAGES) + len(BAD_IMAGES) + len(ODD_NAMES) + 1
    assert sorted(embedded) == sorted(seen - bad)  # each good image exactly once
    assert set(reasons) == bad and len(rejected_rows) == len(bad)
    assert len(embedded) + len(rejected_rows) == len(seen)
    assert all(reason.strip() for reason in reasons.values())
    assert f"Training/{CLASS}/sub folder é/deep 'nested'.jpg" in embedded
    assert not [path for path in [*embedded, *reasons] if "/." in path]
    by_name = {path.rsplit("/", 1)[-1]: reason for path, reason in reasons.items()}
    assert by_name["empty.jpg"] == "empty file"
    assert by_name["bomb.png"].startswith("decompression bomb refused")
    assert by_name["text.jpg"] == by_name["page.png"] == "not an image (unrecognised format)"
    assert by_name["truncated.jpg"].startswith("cannot decode image")
    assert {row["label"] for row in rejected_rows} == {CLASS}


@pytest.mark.slow
def test_a_class_with_more_rejected_files_than_the_limit_fails_the_blocking_check(corpus, output_root):
    """Before this check, a regression rejecting good photos passed unseen: rejected + embedded still add up."""
    result = materialize(
        [raw_images, image_embeddings],
        selection=[AssetKey("raw_images"), AssetKey("image_embeddings"), AssetKey("rejected_images")],
        partition_key=CLASS,
        resources=make_resources(corpus, output_root),  # default max_rejected_share 0.1
        instance=make_instance([CLASS]),
        raise_on_error=False,
    )
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    share = checks["rejected_share_within_limit"]
    assert not share.passed
    metadata = {key: value.value for key, value in share.metadata.items()}
    assert metadata["rejected"] == len(BAD_NAMES)
    assert metadata["rejected_share"] == round(len(BAD_NAMES) / metadata["files"], 4) > 0.1
    assert metadata["worst_classes"] == {CLASS: metadata["rejected_share"]}
    assert checks["every_indexed_file_is_embedded_or_rejected"].passed
    assert not result.success  # blocking: nothing downstream is fitted on what is left
