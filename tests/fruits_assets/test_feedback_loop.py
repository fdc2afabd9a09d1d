"""The feedback loop end to end: users correct answers through `fruits serve`, `fruits run` trains on their photos
(only those are embedded; never evaluated), the served model then names them, and a removed photo leaves the next
model's training rows."""

import contextlib
import io
import json
import time

import pyarrow.compute as pc
import requests

from fruits_assets.app.service import create_app
from fruits_assets.cli import main
from spark_code.photos.splits import FEEDBACK
from spark_code.storage.class_tables import read_arrow
from spark_code.storage.feedback import FeedbackStore
from tests.conftest import SHARED
from tests.fruits_assets.app.serving import Serving

FIELD = SHARED / "data" / "field-photos"
TOKEN = "operator-token"


def _run(*args: str) -> dict:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["run", *args, "--json"])
    summary = json.loads(stdout.getvalue())
    assert code == 0, summary
    return summary


def test_corrected_photos_train_the_next_model_which_names_them(trained_run, trained_copy, small_root, tmp_path):
    feedback_root = tmp_path / "feedback"
    photos = {label: sorted((FIELD / "train" / label).iterdir())[:3] for label in ("Banana", "Kiwi")}
    app = create_app(str(trained_copy), poll_seconds=0.3, feedback_root=str(feedback_root), feedback_token=TOKEN)
    with Serving(app) as served:
        served.wait_ready()
        before = served.predict(photos["Banana"][0].read_bytes()).json()["model"]["version"]
        for label, files in photos.items():
            for photo in files:
                answer = requests.post(
                    f"{served.url}/v1/feedback",
                    params={"label": label},
                    data=photo.read_bytes(),
                    headers={"Authorization": f"Bearer {TOKEN}", "X-Fruits-Sender": "shopper"},
                    timeout=30,
                )
                assert answer.status_code == 201, answer.text

        where = ["--images-root", str(small_root), "--output-root", str(trained_copy)]
        summary = _run(*where, "--feedback-root", str(feedback_root), "--feedback-weight", "5")
        assert summary["images_embedded"] == 6 and summary["feedback_photos"] == 6
        assert summary["feedback_photos_per_class"] == {"Banana": 3, "Kiwi": 3}
        assert summary["evaluation_images"] == trained_run[0]["evaluation_images"]  # never evaluated
        # the safeguards ran on them: their neighbours agree with them, and three photos flood no class
        assert summary["checks"]["feedback_photos_look_like_their_class"] is True
        assert summary["checks"]["no_sender_floods_a_class"] is True
        reduced = read_arrow(summary["outputs"]["reduced_features"])
        from_feedback = reduced.filter(pc.equal(reduced["split"], FEEDBACK))
        assert sorted(from_feedback.column("label").to_pylist()) == ["Banana"] * 3 + ["Kiwi"] * 3
        evaluated = read_arrow(summary["outputs"]["classifier_evaluation"]).column("path").to_pylist()
        assert not any("feedback" in path for path in evaluated)

        # The served model follows, and names the photos it was corrected on.
        deadline = time.monotonic() + 30
        while served.predict(photos["Kiwi"][0].read_bytes()).json()["model"]["version"] == before:
            assert time.monotonic() < deadline, "the new model was never served"
            time.sleep(0.2)
        for label, files in photos.items():
            for photo in files:
                assert served.predict(photo.read_bytes()).json()["label"] == label, photo.name

    # A removed photo is gone from the next model's training rows; nothing else is embedded again.
    store = FeedbackStore(str(feedback_root))
    gone = next(record for record in store.records() if record.label == "Kiwi")
    store.remove(gone.id)
    again = _run(*where, "--feedback-root", str(feedback_root), "--feedback-weight", "5")
    assert again["images_embedded"] == 0 and again["feedback_photos_per_class"] == {"Banana": 3, "Kiwi": 2}
    paths = read_arrow(again["outputs"]["reduced_features"]).column("path").to_pylist()
    assert not any(gone.id in path for path in paths) and sum("/feedback/" in path for path in paths) == 5
