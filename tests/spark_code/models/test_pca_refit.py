from spark_code.models.pca_refit import FIT_SETTINGS, TRAINING_ROWS, refit_reason

CONTEXT = {"embedding": {"alpha": 0.35}, "roles": {"train": ["Training"]}, FIT_SETTINGS: {"variance": 0.95}}
PREVIOUS = {**CONTEXT, TRAINING_ROWS: {"Banana": 100, "Kiwi": 100}, "model_version": "v1"}


def test_the_pca_is_kept_below_the_share_and_refitted_at_it():
    assert refit_reason(PREVIOUS, {"Banana": 100, "Kiwi": 100}, CONTEXT, 0.1) is None
    assert refit_reason(PREVIOUS, {"Banana": 100, "Kiwi": 119}, CONTEXT, 0.1) is None
    assert "20 training photos changed" in refit_reason(PREVIOUS, {"Banana": 100, "Kiwi": 120}, CONTEXT, 0.1)
    assert "changed" in refit_reason(PREVIOUS, {"Banana": 90, "Kiwi": 110}, CONTEXT, 0.1)  # removed ones count too
    assert refit_reason(PREVIOUS, {"Banana": 100, "Kiwi": 100}, CONTEXT, 0.0) is not None  # 0: always


def test_classes_settings_and_a_missing_pca_always_refit():
    assert refit_reason(None, {"Kiwi": 1}, CONTEXT, 0.1) == "no PCA published yet"
    assert "new class(es): Mango" in refit_reason(PREVIOUS, {"Banana": 100, "Kiwi": 100, "Mango": 1}, CONTEXT, 0.1)
    assert "no longer present: Banana" in refit_reason(PREVIOUS, {"Kiwi": 100}, CONTEXT, 0.1)
    for key in CONTEXT:
        other = {**CONTEXT, key: {"changed": True}}
        assert "changed" in refit_reason(PREVIOUS, {"Banana": 100, "Kiwi": 100}, other, 0.1)
    old = {key: value for key, value in PREVIOUS.items() if key != TRAINING_ROWS}
    assert "does not record" in refit_reason(old, {"Banana": 100, "Kiwi": 100}, CONTEXT, 0.1)
