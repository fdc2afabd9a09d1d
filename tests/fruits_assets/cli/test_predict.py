"""`fruits predict` answers only with a classifier that `fruits serve` would serve: one quality gate for both
(models_watch.evaluation_verdict), on the classifier's published evaluation."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from fruits_assets.app.models_watch import ModelWatcher
from fruits_assets.cli import main
from spark_code.storage.class_tables import METADATA_KEY

REFUSED = "fruits: error: not answering with the published classifier: "


def _output_copy(source: Path, target: Path) -> Path:
    """The models and the evaluation of a trained output, in a folder of this test's own."""
    for name in ("pca_model", "fruit_classifier", "classifier_evaluation"):
        shutil.copytree(source / name, target / name)
    return target


def _stamp_evaluation(root: Path, floor: float | None) -> None:
    """Re-stamp the published evaluation `version:<settings digest>:floor`, as a run with that accuracy floor
    stamps it, or `version:<settings digest>` alone (floor None): the stamp its newest commit's metadata holds."""
    commit = max((root / "classifier_evaluation" / "_delta_log").glob("*.json"))
    actions = [json.loads(line) for line in commit.read_text().splitlines()]
    for action in actions:
        if "commitInfo" in action:
            metadata = json.loads(action["commitInfo"]["userMetadata"])
            version, digest = metadata[METADATA_KEY]["whole"]["stamp"].split(":")[:2]
            metadata[METADATA_KEY]["whole"]["stamp"] = f"{version}:{digest}" + ("" if floor is None else f":{floor}")
            action["commitInfo"]["userMetadata"] = json.dumps(metadata)
    commit.write_text("\n".join(map(json.dumps, actions)) + "\n")


def _served_verdict(root: Path) -> str | None:
    """Why `fruits serve` does not serve the published classifier, or None when it serves it."""
    watcher = ModelWatcher(str(root))
    return None if watcher.refresh() else watcher.problem


def _predict(root: Path, photo: Path, capsys) -> tuple[int, str, str]:
    capsys.readouterr()  # what came before (the watcher's log line) is not predict's
    code = main(["predict", str(photo), "--output-root", str(root), "--json"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_refuses_a_classifier_below_its_floor_as_serve_does(trained_run, small_root, tmp_path, capsys):
    root = _output_copy(trained_run[1], tmp_path / "out")
    photo = next((small_root / "Test" / "Kiwi").iterdir())

    _stamp_evaluation(root, 1.01)  # its accuracy, 1.0, is below this floor
    refusal = _served_verdict(root)
    assert refusal is not None and refusal.endswith("accuracy 1.0000 is below its floor 1.0100")
    assert _predict(root, photo, capsys) == (2, "", f"{REFUSED}{refusal}\n")

    _stamp_evaluation(root, 0.9)  # the same classifier and evaluation, above this floor: served, and answered
    assert _served_verdict(root) is None
    code, out, err = _predict(root, photo, capsys)
    assert code == 0 and json.loads(out)["top"][0]["label"] == "Kiwi" and err == ""


def test_predict_refuses_a_classifier_not_evaluated_yet(trained_run, small_root, tmp_path, capsys):
    root = _output_copy(trained_run[1], tmp_path / "out")
    shutil.rmtree(root / "classifier_evaluation")  # a run stopped between the classifier and its evaluation
    refusal = _served_verdict(root)
    assert refusal is not None and refusal.endswith("has no published evaluation yet")
    assert _predict(root, next((small_root / "Test" / "Kiwi").iterdir()), capsys) == (2, "", f"{REFUSED}{refusal}\n")


def test_an_evaluation_stamped_without_its_floor_is_refused_not_a_crash(trained_run, small_root, tmp_path, capsys):
    root = _output_copy(trained_run[1], tmp_path / "out")
    _stamp_evaluation(root, None)  # `version:<settings digest>`: nothing says which floor the run applied
    refusal = _served_verdict(root)
    assert refusal is not None and refusal.endswith("its published evaluation does not say its accuracy floor")
    assert _predict(root, next((small_root / "Test" / "Kiwi").iterdir()), capsys) == (2, "", f"{REFUSED}{refusal}\n")


def test_facts_load_from_any_working_directory(tmp_path):
    """The installed package finds its facts file from anywhere, not only from the repository root (here, not in
    tests/spark_code: the cluster gets spark_code as shipped files, not installed)."""
    code = "from spark_code.models.fruit_facts import facts_for; print(facts_for('Kiwi').fruit)"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Kiwi"
