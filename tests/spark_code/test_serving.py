import numpy as np
import pytest

from spark_code.parquet_store import read_arrow
from spark_code.serving import FruitPredictor
from tests.images_factory import BAD_IMAGES, encoded, fruit_like


@pytest.fixture(scope="module")
def predictor(trained_run):
    return FruitPredictor(str(trained_run[1]))


def _table(root, asset):
    return read_arrow(str(root / asset)).to_pandas()


def test_predict_time_features_are_exactly_the_training_time_features(trained_run, predictor):
    embeddings = _table(trained_run[1], "image_embeddings")
    for _, row in embeddings.sample(4, random_state=0).iterrows():
        with open(row["path"].removeprefix("file:"), "rb") as handle:
            assert np.array_equal(predictor.features(handle.read()), row["features"])


def test_predictions_match_the_pipelines_evaluation(trained_run, predictor):
    evaluation = _table(trained_run[1], "classifier_evaluation")
    assert len(evaluation) == 12
    for _, row in evaluation.iterrows():
        prediction = predictor.predict(row["path"].removeprefix("file:"))
        assert prediction.error is None
        assert prediction.top[0][0] == row["predicted"]
        assert prediction.top[0][1] == pytest.approx(row["confidence"], abs=1e-5)
        assert len(prediction.top) == 3 and sum(p for _, p in prediction.top) <= 1 + 1e-9


def test_any_common_photo_is_answered(tmp_path, predictor):
    big = tmp_path / "big photo.jpg"
    big.write_bytes(encoded(fruit_like((3000, 2000)), "JPEG"))
    alpha = tmp_path / "alpha.png"
    alpha.write_bytes(encoded(fruit_like(seed=3).convert("RGBA"), "PNG"))
    for photo in (big, alpha):
        prediction = predictor.predict(str(photo))
        assert prediction.error is None and prediction.top[0][0] in predictor.labels


def test_bad_photos_are_answered_with_an_error(tmp_path, predictor):
    text = tmp_path / "text.jpg"
    text.write_bytes(BAD_IMAGES["text.jpg"])
    assert "not an image" in predictor.predict(str(text)).error
    assert "No such file" in predictor.predict(str(tmp_path / "missing.jpg")).error


def test_missing_models_are_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialize the assets first"):
        FruitPredictor(str(tmp_path))
