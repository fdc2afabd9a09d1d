import pytest
from pyspark.sql import functions as F

from spark_code.layout import NO_SPLIT
from spark_code.splits import EVALUATE, ROLE, TRAIN, VALIDATE, SplitError, SplitRoles, resolve_roles, with_roles


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
    assert EVALUATE in by_class["five"]  # a class of 1/fraction images gives one to the evaluation
    held = by_class["big"].count(EVALUATE) / 400
    assert 0.15 < held < 0.25


def test_a_photo_stays_on_its_side_when_photos_are_added(spark):
    before = _roles(_rows(spark, {"kiwi": 50}))
    after = _roles(_rows(spark, {"kiwi": 80}))
    assert {path: after[path] for path in before} == before


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
