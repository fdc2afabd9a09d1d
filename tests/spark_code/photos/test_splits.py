import pytest
from pyspark.sql import functions as F

from spark_code.photos.layout import NO_SPLIT
from spark_code.photos.splits import (
    EVALUATE,
    FEEDBACK,
    ROLE,
    TRAIN,
    VALIDATE,
    SplitError,
    SplitRoles,
    resolve_roles,
    split_names,
    with_roles,
)


@pytest.mark.parametrize(
    ("splits", "expected"),
    [
        (["Test", "Training"], SplitRoles("Training", None, "Test")),
        (["train", "val", "test"], SplitRoles("train", "val", "test")),
        (["TRAINING", "Validation", "Testing"], SplitRoles("TRAINING", "Validation", "Testing")),
        (["Training"], SplitRoles("Training")),
        ([NO_SPLIT], SplitRoles(NO_SPLIT)),
        (["photos"], SplitRoles("photos")),
        (["photos", "test"], SplitRoles("photos", None, "test")),
        (["train", "dev", "extra"], SplitRoles("train", "dev", None)),
        (["Training", "Test "], SplitRoles("Training", None, "Test ")),  # a trailing space: still the test split
        (["TRAIN", "VALID", "EVAL"], SplitRoles("TRAIN", "VALID", "EVAL")),
    ],
)
def test_roles_are_found_by_name(splits, expected):
    assert resolve_roles(splits) == expected


def test_explicit_names_win_and_must_exist():
    assert resolve_roles(["a", "b", "c"], training="b", evaluation="a") == SplitRoles("b", None, "a")
    assert resolve_roles(["Training", "Test"], evaluation="Training", training="Test") == SplitRoles(
        "Test", None, "Training"
    )
    with pytest.raises(SplitError, match="evaluation split 'Nope' not found among the splits"):
        resolve_roles(["Training", "Test"], evaluation="Nope")


def test_no_training_split_among_several_is_a_clear_error():
    with pytest.raises(SplitError, match="no training split among .* FRUITS_TRAINING_SPLIT"):
        resolve_roles(["first", "second"])


def test_a_split_cannot_have_two_roles():
    with pytest.raises(SplitError, match="two roles"):
        resolve_roles(["Training", "Test"], validation="Training", training="Training")


def test_a_bad_holdout_fraction_is_refused():
    with pytest.raises(SplitError, match="holdout_fraction"):
        resolve_roles(["Training"], holdout_fraction=1.0)


def _rows(spark, sizes: dict[str, int], split: str = NO_SPLIT):
    rows = [(f"file:/data/{label}/photo_{i}.jpg", label, split) for label, n in sizes.items() for i in range(n)]
    return spark.createDataFrame(rows, "path string, label string, split string")


def _roles(df, roles: SplitRoles | None = None) -> dict[str, str]:
    roles = roles or SplitRoles(NO_SPLIT)
    return {row["path"]: row[ROLE] for row in with_roles(df, roles).collect()}


def test_holdout_is_stratified_and_keeps_every_class_trainable(spark):
    sizes = {"one": 1, "two": 2, "three": 3, "five": 5, "big": 400}
    roles = _roles(_rows(spark, sizes))
    by_class = {label: [roles[f"file:/data/{label}/photo_{i}.jpg"] for i in range(n)] for label, n in sizes.items()}
    assert by_class["one"] == [TRAIN]
    for label in sizes:
        assert TRAIN in by_class[label], label  # every class keeps a training image
    held = by_class["big"].count(EVALUATE) / 400
    assert 0.15 < held < 0.25


def test_a_photo_stays_on_its_side_when_photos_are_added(spark):
    before = _roles(_rows(spark, {"kiwi": 50}))
    after = _roles(_rows(spark, {"kiwi": 80}))
    assert {path: after[path] for path in before} == before


def test_growing_classes_photo_by_photo_moves_a_photo_only_while_its_class_trains_on_it_alone(spark):
    # 40 classes grown from 1 to 30 photos, one photo at a time (the old rule moved photos at the 4 to 5 boundary).
    classes = [f"fruit {c}" for c in range(40)]
    history = [_roles(_rows(spark, dict.fromkeys(classes, n))) for n in range(1, 31)]
    for before, after in zip(history, history[1:], strict=False):
        for label in classes:
            photos = {path: role for path, role in before.items() if f"/{label}/" in path}
            assert TRAIN in photos.values() and TRAIN in {r for p, r in after.items() if f"/{label}/" in p}
            moved = {path for path in photos if after[path] != photos[path]}
            # Only the documented exception moves a photo: a class with a single training photo, every other photo
            # held out, may hold that one out once a new photo trains instead.
            if moved:
                assert list(photos.values()).count(TRAIN) == 1, (label, moved)
                assert [photos[path] for path in moved] == [TRAIN] and [after[path] for path in moved] == [EVALUATE]
    # A class whose first photo hashes to the training side (it still trains among 30) never moves a photo.
    first_photo_trains = [label for label in classes if history[-1][f"file:/data/{label}/photo_0.jpg"] == TRAIN]
    assert 25 <= len(first_photo_trains) < len(classes)  # about 80% of them
    for label in first_photo_trains:
        final = {path: role for path, role in history[-1].items() if f"/{label}/" in path}
        assert all(roles[path] == final[path] for roles in history for path in roles if path in final), label
    held = [role for role in history[-1].values()].count(EVALUATE) / (30 * len(classes))
    assert 0.15 < held < 0.25


def test_the_holdout_depends_on_the_file_not_the_folder(spark):
    first = _roles(_rows(spark, {"kiwi": 40}, split="Training"), SplitRoles("Training"))
    moved = spark.createDataFrame(
        [(path.replace("file:/data", "s3://bucket/images"), "kiwi", "Training") for path in first],
        "path string, label string, split string",
    )
    second = _roles(moved, SplitRoles("Training"))
    assert sorted(second.values()) == sorted(first.values())


def test_splits_with_roles_and_without(spark):
    df = spark.createDataFrame(
        [("a", "x", "train"), ("b", "x", "val"), ("c", "x", "test"), ("d", "x", "extra")],
        "path string, label string, split string",
    )
    got = _roles(df, SplitRoles("train", "val", "test"))
    assert got == {"a": TRAIN, "b": VALIDATE, "c": EVALUATE, "d": None}
    assert with_roles(df, SplitRoles("train", "val", "test")).where(F.col(ROLE) == EVALUATE).count() == 1


def test_feedback_photos_always_train_and_take_no_role_by_name(spark):
    rows = spark.createDataFrame(
        [(f"file:/data/{split}/kiwi/{i}.jpg", "kiwi", split) for split in ("Training", FEEDBACK) for i in range(20)],
        "path string, label string, split string",
    )
    for roles in (SplitRoles("Training"), SplitRoles("Training", None, "Test")):
        found = {row["path"]: row[ROLE] for row in with_roles(rows, roles).collect()}
        assert {role for path, role in found.items() if f"/{FEEDBACK}/" in path} == {TRAIN}
    assert split_names(rows) == ["Training"]
