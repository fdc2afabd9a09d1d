"""Roles of the images: which split trains, which selects the classifier's settings, which evaluates it, and the
deterministic hold-out of training images that stands in for a missing evaluation split.

Split folders may have any names: the roles are settings, and by default they are found by name (`Training` or
`train` trains, `Validation` or `val` selects, `Test` evaluates, case-insensitively). A layout without split folders,
or with one split only, trains on it and evaluates on a hold-out of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from spark_code.photos.layout import DEFAULT_SPLIT_NAMES, NO_SPLIT, LayoutError, split_key
from spark_code.photos.views import is_view, photo_path

ROLE = "role"
TRAIN = "train"
VALIDATE = "validate"
EVALUATE = "evaluate"

FEEDBACK = "_feedback"
"""The split of the photos the app's users confirmed (the feedback area, a source of its own beside the images
root): they always train, never validate or evaluate. Hidden to the layout's listing, no split folder has this
name."""

HOLDOUT_FRACTION = 0.2
"""Share of each class's training images held out for evaluation when there is no evaluation split."""

_HASH_BUCKETS = 1_000_000


class SplitError(LayoutError):
    """The split settings do not fit the images' splits; the message says why, for a person to read."""


@dataclass(frozen=True)
class SplitRoles:
    """The split of each role; `evaluation` None means a hold-out of the training split."""

    training: str
    validation: str | None = None
    evaluation: str | None = None
    holdout_fraction: float = HOLDOUT_FRACTION

    def _name(self, split: str) -> str:
        return "the images (no split folders)" if split == NO_SPLIT else f"split {split!r}"

    def describe_training(self) -> str:
        """What the models are fitted on, for the summary and the metadata."""
        held = " less the evaluation hold-out" if self.evaluation is None else ""
        return f"{self._name(self.training)}{held}"

    def describe_evaluation(self) -> str:
        """Where the classifier is evaluated, for the summary and the metadata."""
        if self.evaluation is not None:
            return self._name(self.evaluation)
        return f"hold-out of {self.holdout_fraction:.0%} of {self._name(self.training)}, by a hash of each file name"

    def describe_selection(self) -> str:
        """Which images the classifier's settings are chosen on, for the summary and the metadata."""
        if self.validation is not None:
            return f"{self._name(self.training)} and {self._name(self.validation)}"
        return self.describe_training()


def _by_default_name(role: str, splits: list[str], taken: set[str]) -> str | None:
    for candidate in DEFAULT_SPLIT_NAMES[role]:
        for split in splits:
            if split_key(split) == candidate and split not in taken:
                return split
    return None


def resolve_roles(
    splits: Iterable[str],
    training: str = "",
    validation: str = "",
    evaluation: str = "",
    holdout_fraction: float = HOLDOUT_FRACTION,
) -> SplitRoles:
    """The roles of the given split names: explicit names must exist, the others are found by name (see the module's
    docstring); a single split trains. A missing validation or evaluation split is not an error."""
    names = sorted(set(splits))
    if not 0 < holdout_fraction < 1:
        raise SplitError(f"holdout_fraction {holdout_fraction} must be between 0 and 1")
    for role, explicit in (("training", training), ("validation", validation), ("evaluation", evaluation)):
        if explicit and explicit not in names:
            raise SplitError(f"{role} split {explicit!r} not found among the splits {names}")
    taken = {name for name in (training, validation, evaluation) if name}
    train = training or _by_default_name(TRAIN, names, taken)
    taken |= {train} - {None}
    selected = validation or _by_default_name(VALIDATE, names, taken)
    taken |= {selected} - {None}
    evaluated = evaluation or _by_default_name(EVALUATE, names, taken)
    taken |= {evaluated} - {None}
    if train is None:
        others = [name for name in names if name not in taken]
        if len(others) != 1:
            raise SplitError(
                f"no training split among {names}: name it with FRUITS_TRAINING_SPLIT (default names: "
                f"{', '.join(DEFAULT_SPLIT_NAMES[TRAIN])}, any case)"
            )
        train = others[0]
    chosen = [name for name in (train, selected, evaluated) if name is not None]
    if len(set(chosen)) != len(chosen):
        raise SplitError(
            f"a split cannot have two roles: training {train!r}, validation {selected!r}, evaluation {evaluated!r}"
        )
    return SplitRoles(train, selected, evaluated, holdout_fraction)


def _unit_hash(column: Column) -> Column:
    """A number in [0, 1) that depends only on the column's value: the same file lands on the same side."""
    return F.pmod(F.xxhash64(column), F.lit(_HASH_BUCKETS)) / F.lit(float(_HASH_BUCKETS))


def _held_out(df: DataFrame, fraction: float) -> Column:
    """Training rows held out for evaluation: those whose hash of `<label>/<file name>` is below the fraction, so a
    photo keeps its side across runs and wherever the root is, and adding photos to a class moves none of the others.

    Except that a class (in its split) none of whose photos hashes at or above the fraction trains on its
    highest-hashing photo, so that every class trains: only there can an added photo move one (that photo, to the
    hold-out). No rule on the photos present can do better (a class of one photo must train on it, so a photo that a
    larger class holds out moved when its class grew from it); a rule on class size moves photos in far more
    classes."""
    photo = photo_path()  # a photo's augmented views go where it goes
    key = F.concat_ws("/", F.col("label"), F.element_at(F.split(photo, "/"), -1))
    u = _unit_hash(key)
    in_class = Window.partitionBy("label", "split")
    by_hash = u < F.lit(fraction)
    class_trains_by_hash = F.max((~by_hash).cast("int")).over(in_class) == 1
    highest = F.dense_rank().over(in_class.orderBy(u.desc(), photo.desc())) == 1
    return by_hash & (class_trains_by_hash | ~highest)


def with_roles(df: DataFrame, roles: SplitRoles) -> DataFrame:
    """Add `role` (TRAIN, VALIDATE, EVALUATE, or null for a split with no role) to rows with path, label, split. An
    augmented view (spark_code.photos.views) only ever trains: the view of a held-out photo has no role; so does a
    photo of the feedback area (FEEDBACK)."""
    split = F.col("split")
    role = F.when(split == roles.training, F.lit(TRAIN)).when(split == FEEDBACK, F.lit(TRAIN))
    if roles.validation is not None:
        role = role.when(split == roles.validation, F.lit(VALIDATE))
    if roles.evaluation is not None:
        role = role.when(split == roles.evaluation, F.lit(EVALUATE))
    else:
        held = _held_out(df, roles.holdout_fraction)
        role = F.when((split == roles.training) & held, F.lit(EVALUATE)).otherwise(role)
    return df.withColumn(ROLE, F.when(~is_view() | (role == TRAIN), role))


def rows_with_role(df: DataFrame, roles: SplitRoles, *wanted: str) -> DataFrame:
    """The rows of the given roles, with their `role` column."""
    return with_roles(df, roles).where(F.col(ROLE).isin(*wanted))


def split_names(df: DataFrame) -> list[str]:
    """The distinct split names of some rows (a handful of values; no row reaches the driver), the feedback area's
    left out: it takes no role by name (with_roles gives it its own)."""
    return sorted(row[0] for row in df.select("split").distinct().collect() if row[0] != FEEDBACK)
