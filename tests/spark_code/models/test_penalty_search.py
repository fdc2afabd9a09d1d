from spark_code.models.penalty_search import SEARCH, search_reason

CONTEXT = {"classifier": {"reg_params": [0.01, 1e-7]}, "roles": {"train": "Training"}}
SEARCHED = {"training_rows": {"Banana": 100, "Kiwi": 100}, "context": CONTEXT, "reg_param": 1e-7}
PREVIOUS = {SEARCH: SEARCHED, "model_version": "v1"}


def test_the_penalty_is_kept_below_the_share_and_searched_at_it():
    assert search_reason(PREVIOUS, {"Banana": 100, "Kiwi": 100}, CONTEXT, 0.1) is None
    assert search_reason(PREVIOUS, {"Banana": 100, "Kiwi": 119}, CONTEXT, 0.1) is None
    assert "20 training photos changed" in search_reason(PREVIOUS, {"Banana": 100, "Kiwi": 120}, CONTEXT, 0.1)
    assert "20 training photos" in search_reason(PREVIOUS, {"Banana": 90, "Kiwi": 110}, CONTEXT, 0.1)  # removed too
    assert search_reason(PREVIOUS, {"Banana": 100, "Kiwi": 100}, CONTEXT, 0.0) is not None  # 0: always


def test_a_new_or_gone_class_counts_its_photos_not_a_search_by_itself():
    assert search_reason(PREVIOUS, {"Banana": 100, "Kiwi": 100, "Mango": 19}, CONTEXT, 0.1) is None
    assert "20 training photos" in search_reason(PREVIOUS, {"Banana": 100, "Kiwi": 100, "Mango": 20}, CONTEXT, 0.1)
    assert "100 training photos" in search_reason(PREVIOUS, {"Kiwi": 100}, CONTEXT, 0.1)


def test_no_search_recorded_or_other_settings_search_again():
    assert search_reason(None, {"Kiwi": 1}, CONTEXT, 0.1) == "no earlier search recorded"
    assert search_reason({"model_version": "v0"}, {"Kiwi": 1}, CONTEXT, 0.1) == "no earlier search recorded"
    for key in CONTEXT:
        other = {**CONTEXT, key: {"changed": True}}
        reason = search_reason(PREVIOUS, {"Banana": 100, "Kiwi": 100}, other, 0.1)
        assert "settings or the split roles changed" in reason
