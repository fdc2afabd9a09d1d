import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fruits_assets.cli import main
from fruits_assets.cli.run import summary_lines
from spark_code.features.embeddings import build_embedder
from spark_code.photos.images import preprocess
from spark_code.settings import ModelSettings
from spark_code.storage.class_tables import read_arrow
from spark_code.storage.publish import current
from tests.conftest import REAL_CLASSES, WEIGHTS, copy_sample, numpy_pca_k
from tests.images_factory import BAD_IMAGES, encoded, fruit_like, write_files


def embeddings_table(summary: dict) -> pa.Table:
    return read_arrow(summary["outputs"]["image_embeddings"])


def test_main_job_on_three_classes_materializes_every_asset(trained_run):
    summary, output_root = trained_run
    assert summary["success"]
    assert summary["classes"] == 3
    assert summary["images_indexed"] == summary["images_featurized"] == 42
    assert summary["images_rejected"] == 0
    training = embeddings_table(summary).filter(pc.equal(pc.field("split"), "Training"))
    k, explained = numpy_pca_k(np.array(training.column("features").to_pylist()), 0.95)
    assert summary["pca_k"] == k and summary["pca_explained_variance"] == pytest.approx(explained, abs=1e-6)
    assert summary["accuracy"] == 1.0 and summary["macro_f1"] == 1.0
    assert summary["checks"] == {
        "embeddings_are_1280_wide_without_nan": True,
        "every_indexed_file_is_embedded_or_rejected": True,
        "rejected_share_within_limit": True,
        "reduced_width_equals_k": True,
        "feedback_photos_look_like_their_class": True,
        "no_sender_floods_a_class": True,
        "accuracy_above_floor": True,
    }
    # No field root: no field evaluation, and nothing said of one.
    assert summary["field_fruit_accuracy"] is None and "field_evaluation" not in summary["outputs"]
    embeddings = embeddings_table(summary)
    assert sorted(set(embeddings.column("label").to_pylist())) == REAL_CLASSES
    assert {len(v) for v in embeddings.column("features").to_pylist()} == {1280}
    reduced = read_arrow(summary["outputs"]["reduced_features"])
    assert {len(v) for v in reduced.column("pca_features").to_pylist()} == {summary["pca_k"]}
    for model in ("pca_model", "fruit_classifier"):
        published = Path(current(str(output_root / model)))
        assert (published / "metadata").is_dir() and (published / "notes.json").is_file()


def test_predict_names_the_fruit_and_tells_about_it(trained_run, small_root, tmp_path, capsys, monkeypatch):
    photos = [str(next((small_root / "Test" / name).iterdir())) for name in ("Banana", "Kiwi")]
    alpha = tmp_path / "alpha.png"
    alpha.write_bytes(encoded(fruit_like(seed=2).convert("RGBA"), "PNG"))
    code = main(["predict", *photos, str(alpha), "--output-root", str(trained_run[1]), "--json"])
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert [a["top"][0]["label"] for a in answers[:2]] == ["Banana", "Kiwi"]
    assert answers[0]["facts"]["fruit"] == "Banana" and answers[0]["facts"]["known"]
    assert all(len(a["top"]) == 3 for a in answers)

    code = main(["predict", photos[1], "--output-root", str(trained_run[1])])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith(f"{photos[1]}: Kiwi (") and "Actinidiaceae" in out

    # The default output root, ./fruits-output, and --top
    (tmp_path / "fruits-output").symlink_to(trained_run[1])
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FRUITS_OUTPUT_ROOT", raising=False)
    assert main(["predict", photos[0], "--top", "2", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert [entry["label"] for entry in answer["top"]][:1] == ["Banana"] and len(answer["top"]) == 2


def test_predict_names_every_photo_of_a_folder_and_says_when_a_folder_holds_none(
    trained_run, small_root, tmp_path, capsys
):
    """A folder (here a class folder of the sample, plus a photo one level down and a hidden file) stands for its
    visible files, sorted, at any depth; an empty folder is an error, the other answers still given."""
    folder = Path(shutil.copytree(small_root / "Test" / "Kiwi", tmp_path / "phone photos"))
    (folder / "older").mkdir()
    shutil.copy(next((small_root / "Test" / "Banana").iterdir()), folder / "older" / "banana.jpg")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "empty").mkdir()
    code = main(["predict", f"{folder}/", str(tmp_path / "empty"), "--output-root", str(trained_run[1]), "--json"])
    captured = capsys.readouterr()
    answers = [json.loads(line) for line in captured.out.splitlines()]
    expected = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name[0] != ".")
    assert [a["photo"] for a in answers] == [f"{folder}/{relative}" for relative in expected]
    assert [a["top"][0]["label"] for a in answers] == ["Banana" if r.startswith("older/") else "Kiwi" for r in expected]
    assert code == 1 and captured.err == f"fruits: {tmp_path / 'empty'}: no photo in this folder\n"


def test_predict_answers_the_good_photos_and_fails_on_bad_ones(trained_run, small_root, tmp_path, capsys):
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    good = str(next((small_root / "Test" / "Kiwi").iterdir()))
    code = main(["predict", str(text), str(tmp_path / "missing.jpg"), good, "--output-root", str(trained_run[1])])
    captured = capsys.readouterr()
    assert code == 1
    assert f"{good}: Kiwi" in captured.out
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2 and errors[0].startswith(f"fruits: {text}: ") and "not an image" in errors[0]


@pytest.mark.slow
def test_a_subset_of_classes_and_the_human_summary(small_root, output_root, capsys):
    code = main(
        [
            "run",
            "--images-root",
            str(small_root),
            "--output-root",
            str(output_root),
            "--classes",
            "Kiwi",
            "Banana",
            "--pca-variance",
            "0.999",
            "--pca-max-k",
            "3",
            "--no-flip-average",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "fruits run succeeded" in out and re.search(r"\n  classes: +2\n", out) and "k=3," in out
    embeddings = read_arrow(str(output_root / "image_embeddings"))
    assert sorted(set(embeddings.column("label").to_pylist())) == ["Banana", "Kiwi"]
    training = embeddings.filter(pc.equal(pc.field("split"), "Training"))
    assert numpy_pca_k(np.array(training.column("features").to_pylist()), 0.999, max_k=3)[0] == 3
    # --no-flip-average: each photo's features are the model's on the photo alone, not averaged with its mirror
    first = embeddings.slice(0, 1).to_pylist()[0]
    settings = ModelSettings(weights=str(WEIGHTS), alpha=0.35, flip_average=False)
    photo = Path(first["path"].removeprefix("file:")).read_bytes()
    expected = build_embedder(settings)(preprocess(photo, settings.image_size)[None])[0]
    assert np.array_equal(np.asarray(first["features"], dtype=np.float32), expected)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--images-root", "/nonexistent/images"], "does not exist"),
        (["--classes", "Durian"], "unknown class(es) 'Durian'"),
        (["--weights", "/nonexistent/weights.h5"], "MobileNetV2 weights file not found: /nonexistent/weights.h5"),
        (["--pca-variance", "1.5"], "pca_variance 1.5 must be in (0, 1]"),
        (["--alpha", "1.3"], "model_alpha 1.3 gives 1664-wide features, not the pipeline's 1280"),
        (["--alpha", "1.4"], "model_alpha 1.4 gives 1792-wide features"),
        (["--field-root", "/nonexistent/field"], "field root (--field-root, FRUITS_FIELD_ROOT): images root"),
        (["--min-field-fruit-accuracy", "1.5"], "min_field_fruit_accuracy 1.5 must be between 0 and 1"),
        (["--classifier-penalties", "1e-4,,1e-6"], "classifier_penalties '1e-4,,1e-6': expected numbers separated"),
        (["--classifier-penalties", "-1"], "classifier_penalties '-1' must be numbers of 0 or more"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_code_2(small_root, tmp_path, capsys, args, message):
    """Refused before Spark starts, in this process (the next test runs `python -m fruits_assets.cli` itself)."""
    base = ["--images-root", str(small_root), "--output-root", str(tmp_path)]
    assert main(["run", *base, *args]) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and stderr.startswith("fruits: error: ")
    assert "Traceback" not in stderr and not any(tmp_path.iterdir())


def test_bad_spark_settings_are_one_clear_line_and_exit_code_2(small_root, tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "fruits_assets.cli", "run", "--images-root", str(small_root)],
        env={**os.environ, "FRUITS_SPARK_CONF": "spark.executor.memory=1g", "FRUITS_OUTPUT_ROOT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert "fruits: error: FRUITS_SPARK_CONF is not valid JSON" in completed.stderr


def test_bench_predict_prints_latency_figures(trained_run, small_root, capsys):
    code = main(["bench", "predict", str(small_root / "Test"), "--output-root", str(trained_run[1]), "--limit", "6"])
    figures = json.loads(capsys.readouterr().out)
    assert code == 0 and figures["photos"] == 6
    assert 0 < figures["median_ms"] <= figures["p90_ms"] <= figures["max_ms"]


def test_a_classifier_below_the_floor_is_the_quality_gate_not_a_crash(small_root, trained_copy, capsys):
    """A higher floor makes the evaluation stale: it runs again and only the accuracy check fails (no accuracy
    reaches a floor above 1): exit code 3."""
    args = ["run", "--images-root", str(small_root), "--output-root", str(trained_copy), "--json"]
    code = main([*args, "--min-accuracy", "1.01"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert code == 3 and [step.split(" (")[0] for step in summary["steps"]] == ["classifier_evaluation"]
    assert summary["quality_gate_failed"] and not summary["success"] and summary["error"] is None
    assert summary["checks"] == {"accuracy_above_floor": False}
    assert "fruits: quality gate: accuracy 1.0000 is below the floor" in captured.err


def test_a_classifier_that_does_not_converge_is_never_published(small_root, trained_copy, capsys, monkeypatch):
    """Its settings changed, so the classifier is trained again; no fit converges in 1 iteration: the run fails and
    the classifier published before stays."""
    before = current(str(trained_copy / "fruit_classifier"))
    monkeypatch.setenv("FRUITS_CLASSIFIER_MAX_ITER", "1")
    code = main(["run", "--images-root", str(small_root), "--output-root", str(trained_copy), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 1 and not summary["success"]
    assert "fruit_classifier: no usable classifier: regParam" in summary["error"]
    assert "did not converge in 1 iterations" in summary["error"]
    assert current(str(trained_copy / "fruit_classifier")) == before


FAILED_CHECK = "rejected_share_within_limit"


@pytest.mark.slow
def test_a_failed_run_says_what_failed_and_exits_1(small_root, tmp_path, capsys):
    """A class whose files are all bad: the blocking rejected-share check fails, nothing downstream runs, the summary
    names the failed check and the first error, stderr says the run failed, exit code 1 (not 2 or 3)."""
    root = copy_sample(small_root, tmp_path / "images", ["Kiwi"], {"Training": 3})
    write_files(root / "Training" / "Broken", BAD_IMAGES)
    args = ["--images-root", str(root), "--output-root", str(tmp_path / "out"), "--max-rejected-share", "0.5"]
    code = main(["run", *args, "--json"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert code == 1
    assert summary["success"] is False and not summary["quality_gate_failed"]
    assert summary["checks"][FAILED_CHECK] is False
    # the refused step published nothing: no rejected rows, no PCA, no evaluation
    assert summary["images_rejected"] == 0 and summary["pca_k"] is None and summary["accuracy"] is None
    assert summary["error"] == f"image_embeddings: blocking check failed: {FAILED_CHECK}"
    assert captured.err.endswith(f"\nfruits: run failed: {summary['error']}\n")
    lines = summary_lines(summary, 1.0)
    assert lines[0] == "fruits run FAILED in 1.0 s"
    assert [line.split() for line in lines if "failed check:" in line] == [["failed", "check:", FAILED_CHECK]]
    assert lines[-1].split(None, 1) == ["error:", summary["error"]]
    assert not [line for line in lines if line.lstrip().startswith(("PCA:", "evaluation:"))]
