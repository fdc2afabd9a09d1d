"""The feedback safeguards: photos their neighbours contradict, and senders flooding a class."""

import numpy as np
from dagster import AssetCheckSeverity

from fruits_assets.defs.checks import (
    FLOOD_MIN_PHOTOS,
    check_feedback_labels,
    check_feedback_senders,
    flooding_senders,
)
from spark_code.photos.splits import FEEDBACK, TRAIN
from spark_code.storage.feedback import FeedbackStore
from tests.images_factory import encoded, fruit_like

ROWS = "path string, label string, split string, pca_features array<double>, role string"


def _photo(seed: int) -> bytes:
    return encoded(fruit_like(seed=seed), "JPEG")


def test_a_sender_flooding_a_class_is_named_and_one_sending_a_few_is_not(tmp_path):
    store = FeedbackStore(str(tmp_path / "feedback"))
    for seed in range(FLOOD_MIN_PHOTOS):
        store.add(_photo(seed), "Kiwi", sender="flooder")
    for seed in range(100, 103):
        store.add(_photo(seed), "Kiwi", sender="shopper")
    for seed in range(200, 200 + FLOOD_MIN_PHOTOS - 1):  # all of Banana's, but too few to flood
        store.add(_photo(seed), "Banana", sender="keen")
    records = store.records()
    assert flooding_senders(records, share=0.5) == [
        {"class": "Kiwi", "sender": "flooder", "photos": 10, "share": round(10 / 13, 4)}
    ]
    assert flooding_senders(records, share=0.8) == []  # 77% is not above 80%
    result = check_feedback_senders(records, share=0.5)
    assert not result.passed and result.severity == AssetCheckSeverity.WARN
    assert result.metadata["flooding"].value == 1 and result.metadata["senders"].value == 3
    assert "| Kiwi | flooder | 10 | 77% |" in result.metadata["flooding_senders"].value
    store.drop_sender("flooder")
    assert check_feedback_senders(store.records(), share=0.5).passed


def test_a_feedback_photo_among_another_class_is_flagged_by_its_id(spark):
    """Two clusters of training rows; feedback rows that sit in their class's cluster pass, one filed under Kiwi that
    sits among the Bananas is named; an augmented view of it (filed under Kiwi too) does not vote for it."""
    rng = np.random.default_rng(11)
    centres = {"Banana": np.eye(4)[0], "Kiwi": np.eye(4)[1]}

    def near(name: str) -> list[float]:
        return (centres[name] + rng.normal(scale=0.05, size=4)).tolist()

    wrong = "f" * 64
    rows = [(f"/img/{name}/{i}.jpg", name, "Training", near(name), TRAIN) for name in centres for i in range(12)]
    rows += [(f"/fb/Kiwi/{i:064x}.jpg", "Kiwi", FEEDBACK, near("Kiwi"), TRAIN) for i in range(3)]
    rows.append((f"/fb/Kiwi/{wrong}.jpg", "Kiwi", FEEDBACK, near("Banana"), TRAIN))
    rows += [(f"/fb/Kiwi/{wrong}.jpg#view={n}", "Kiwi", FEEDBACK, near("Banana"), TRAIN) for n in (1, 2)]
    rows.append(("/img/Kiwi/evaluated.jpg", "Kiwi", "Test", near("Banana"), None))  # never votes
    result = check_feedback_labels(spark.createDataFrame(rows, ROWS), feedback_photos=4)
    assert not result.passed and result.severity == AssetCheckSeverity.WARN
    assert result.metadata["flagged"].value == 1 and result.metadata["flagged_per_class"].value == {"Kiwi": 1}
    assert f"| Kiwi | Banana | {wrong} |" in result.metadata["flagged_photos"].value


def test_no_feedback_runs_no_search(spark):
    empty = spark.createDataFrame([], ROWS)
    result = check_feedback_labels(empty, feedback_photos=0)
    assert result.passed and result.metadata["feedback_photos"].value == 0
