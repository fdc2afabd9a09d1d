"""Augmented training views as rows: each photo of the training split, `views` more times, marked by its path and
keyed in the embedding store by its content and view number (spark_code.photos.augment)."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from spark_code.photos.augment import AUGMENTATION_VERSION, VIEW_MARK
from spark_code.photos.image_files import CONTENT_KEY

VIEW = "view"
"""0 for a photo itself, n >= 1 for its n-th augmented view."""
_MARKED = f"{VIEW_MARK}[0-9]+$"


def is_view(path: str = "path") -> Column:
    """Whether a row's path (the column `path`) is an augmented view's (`<photo path>#view=<n>`)."""
    return F.col(path).rlike(_MARKED)


def photo_path(path: str = "path") -> Column:
    """The path of the photo a row shows: its own, or the one a view was made from."""
    return F.regexp_replace(path, _MARKED, "")


def view_number(path: str = "path") -> Column:
    """VIEW of a row from its path: 0 for a photo, n for its n-th view."""
    number = F.regexp_extract(path, _MARKED.replace("[0-9]+", "([0-9]+)"), 1)
    return F.when(number == "", F.lit(0)).otherwise(number.cast("int"))


def view_key(content_key: Column, view: Column) -> Column:
    """The embedding store's key of a view (spark_code.photos.augment.view_key) as a column: the photo's content key
    where `view` is 0."""
    key = F.concat(content_key, F.lit(f":augment{AUGMENTATION_VERSION}:"), view.cast("string"))
    return F.when(view > 0, key).otherwise(content_key)


def with_views(keyed: DataFrame, training_split: str, views: int) -> DataFrame:
    """path, label, split, CONTENT_KEY rows, and for each photo of the training split `views` views of it: its path
    marked with the view's number, its key the view's (spark_code.photos.augment.view_key)."""
    if views < 1:
        return keyed
    number = F.explode(F.sequence(F.lit(1), F.lit(views)))
    extra = keyed.where(F.col("split") == training_split).select("*", number.alias(VIEW))
    extra = extra.withColumn("path", F.concat("path", F.lit(VIEW_MARK), F.col(VIEW).cast("string")))
    extra = extra.withColumn(CONTENT_KEY, view_key(F.col(CONTENT_KEY), F.col(VIEW)))
    return keyed.unionByName(extra.drop(VIEW))
