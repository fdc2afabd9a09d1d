"""`fruits bench incremental`: what a rerun costs next to the first run, with nothing new and with ~1% new photos
and one new class, all in one invocation (ratios, never absolute times across machines).

The images are copied to a working folder, less the photos held back: about `new_share` of each class's photos per
split (at least one where a class has enough) and one whole class. Run 1 is the main job on that copy, run 2 the
same again, then the held-back photos and class are added and run 3 follows. The embeddings published after run 1
are compared with those after run 3, byte for byte, for every photo of run 1.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from fruits_assets.bench.common import loadavg
from fruits_assets.bench.mainjob import run_sampled
from spark_code.photos.layout import discover_layout, join_uri
from spark_code.settings import ModelSettings
from spark_code.storage.class_tables import read_arrow


def _relative_files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def prepare(images_root: Path, work: Path, classes: int, new_share: float) -> dict[str, Any]:
    """Copy `classes` classes to `work/images`, holding back ~new_share of each class's photos (per split) and the
    next class to `work/later`; returns what was held back."""
    layout = discover_layout(str(images_root))
    if len(layout.classes) < classes + 1:
        raise ValueError(f"{images_root} has {len(layout.classes)} classes: {classes} + 1 new one are needed")
    chosen, new_class = layout.classes[:classes], layout.classes[classes]
    images, later = work / "images", work / "later"
    held = 0
    for name in [*chosen, new_class]:
        for folder in map(Path, layout.class_dirs([name])):
            where = folder.relative_to(images_root)
            files = _relative_files(folder)
            keep_back = len(files) if name == new_class else round(len(files) * new_share)
            step = len(files) / keep_back if keep_back else 0
            back = {files[int(i * step)] for i in range(keep_back)}
            held += len(back) if name != new_class else 0
            for relative in files:
                target = (later if relative in back else images) / where / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / relative, target)
    return {"classes": classes, "new_class": new_class, "new_photos_in_existing_classes": held}


def distinct_new_contents(work: Path) -> int:
    """Held-back photos whose bytes are in no photo of the first run: what the model must run on, no more."""

    def digests(folder: Path) -> set[str]:
        return {hashlib.sha256((folder / r).read_bytes()).hexdigest() for r in _relative_files(folder)}

    return len(digests(work / "later") - digests(work / "images"))


def add_later(work: Path) -> None:
    """Move the held-back photos and class into the images."""
    later = work / "later"
    for relative in _relative_files(later):
        target = work / "images" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(later / relative, target)


def embeddings_by_path(output_root: Path) -> dict[str, bytes]:
    """Every published embedding as raw float32 bytes, by path."""
    table = read_arrow(join_uri(str(output_root), "image_embeddings"))
    features = table.column("features").combine_chunks()
    values = pc.list_flatten(features).to_numpy(zero_copy_only=False)
    offsets = features.offsets.to_numpy()
    paths = table.column("path").to_pylist()
    return {path: values[offsets[i] : offsets[i + 1]].tobytes() for i, path in enumerate(paths)}


def bench_incremental(
    images_root: Path, work: Path, classes: int, settings: ModelSettings, new_share: float = 0.01
) -> dict[str, Any]:
    """The three runs, their wall times, ratios to the first and photos embedded, and the bit-identity check."""
    shutil.rmtree(work, ignore_errors=True)
    held = prepare(images_root, work, classes, new_share)
    os.environ["DAGSTER_HOME"] = str(work / "dagster_home")  # the runs' own instance, not the developer's
    (work / "dagster_home").mkdir()
    output_root = work / "out"
    fruits = [sys.executable, "-m", "fruits_assets.cli", "run", "--images-root", str(work / "images"), "--json"]
    fruits += ["--output-root", str(output_root), "--weights", settings.weights, "--alpha", str(settings.alpha)]
    fruits += ["--image-size", str(settings.image_size)]
    fruits += [] if settings.flip_average else ["--no-flip-average"]
    result: dict[str, Any] = {"loadavg_before": loadavg(), **held}
    first = run_sampled(fruits)
    if not first["success"]:
        raise RuntimeError(f"the first run failed: {first['summary'].get('error') or 'see `fruits run` on its own'}")
    before = embeddings_by_path(output_root)
    unchanged = run_sampled(fruits)
    expected_new = distinct_new_contents(work)
    add_later(work)
    grown = run_sampled(fruits)
    after = embeddings_by_path(output_root)
    differing = sum(1 for path, value in before.items() if after.get(path) != value)
    for name, run in (("first", first), ("rerun_nothing_new", unchanged), ("rerun_new_photos_and_class", grown)):
        result[name] = {
            "seconds": run["seconds"],
            "ratio_to_first": round(run["seconds"] / first["seconds"], 3),
            "images_embedded": run["summary"].get("images_embedded"),
            "images_featurized": run["summary"].get("images_featurized"),
            "success": run["success"],
            "ran": run["summary"].get("steps"),
            "stage_seconds": run["summary"].get("stage_seconds"),
        }
    result |= {
        "distinct_new_contents": expected_new,
        "embeddings_compared": len(before),
        "embeddings_not_bit_identical": differing,
        "targets_met": {
            "nothing_new_embeds_nothing": result["rerun_nothing_new"]["images_embedded"] == 0,
            "nothing_new_at_most_0.25x": result["rerun_nothing_new"]["ratio_to_first"] <= 0.25,
            "embeds_exactly_the_new_photos": result["rerun_new_photos_and_class"]["images_embedded"] == expected_new,
            "new_data_at_most_0.5x": result["rerun_new_photos_and_class"]["ratio_to_first"] <= 0.5,
            "old_embeddings_bit_identical": differing == 0,
        },
        "loadavg_after": loadavg(),
    }
    return result
