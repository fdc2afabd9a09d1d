"""Resources: the pipeline's settings and the Spark session, per deployment."""

from __future__ import annotations

import os
from typing import Any

from dagster import ConfigurableResource, EnvVar
from dagster_pyspark import LazyPySparkResource
from pydantic import Field

from fruits_assets.defs.local_spark import local_spark_conf
from spark_code.features.embedding_store import STORE_FOLDER
from spark_code.models.classifier import ClassifierSettings
from spark_code.models.pca_refit import DEFAULT_REFIT_SHARE
from spark_code.models.penalty_search import DEFAULT_SEARCH_SHARE
from spark_code.photos.layout import ImagesLayout, LayoutError, discover_layout, is_remote, local_path, with_source
from spark_code.photos.splits import FEEDBACK, HOLDOUT_FRACTION, SplitRoles, resolve_roles
from spark_code.settings import DEFAULT_OUTPUT_ROOT, OUTPUT_ROOT_ENV, ModelSettings


class FruitsSettings(ConfigurableResource):
    """Where the images and outputs live and how embeddings and PCA are computed.

    Each field comes from a FRUITS_* environment variable and can be overridden in run config.
    """

    images_root: str = Field(
        default="",
        description="Root laid out as <root>/<split>/<class>/<image> or <root>/<class>/<image> (path or s3://).",
    )
    class_depth: int = Field(
        default=0,
        description="How many folders below a split (or the root) the class folders lie; 0: each branch's first "
        "folder holding images (the leaf of <split>/Fruit/Apple/Granny-Smith/<image>).",
    )
    feedback_root: str = Field(
        default="",
        description="The feedback area (<root>/<class>/<photo>, path or s3://: the photos the app's users confirmed, "
        "`fruits serve` keeps them there): they train beside the images, never validate or evaluate; empty: none.",
    )
    feedback_weight: float = Field(
        default=1.0, description="What a feedback photo weighs in the classifier's fit against an image of the root."
    )
    feedback_sender_share: float = Field(
        default=0.5,
        description="The share of a class's feedback photos above which one sender floods it (a warning of the "
        "classifier's check no_sender_floods_a_class, from 10 photos on); changes no output.",
    )
    model_weights: str = Field(
        default="imagenet", description='"imagenet" or a MobileNetV2 weights file (path or s3://).'
    )
    model_alpha: float = Field(default=1.0, description="MobileNetV2 width multiplier; must match the weights.")
    image_size: int = Field(
        default=ModelSettings.image_size, description="Square input size of the network, in pixels."
    )
    batch_size: int = Field(default=64, description="Images per inference batch.")
    flip_average: bool = Field(
        default=True, description="Average each image's embedding with its mirror image's (twice the model's work)."
    )
    augment_views: int = Field(
        default=0,
        description="Augmented views of each training photo (spark_code.photos.augment: the fruit on other "
        "backgrounds, turned, scaled, lit and blurred), each embedded once and trained on beside the photo; 0: none.",
    )
    pca_variance: float = Field(default=0.95, description="Target explained variance choosing k.")
    pca_k: int = Field(default=0, description="Fixed number of components; 0 chooses k by pca_variance.")
    pca_max_k: int = Field(default=100, description="Most components pca_variance may choose.")
    training_split: str = Field(
        default="", description="Split the PCA and classifier are fitted on; empty: Training or train (any case)."
    )
    validation_split: str = Field(
        default="", description="Split the classifier's penalty is chosen on; empty: Validation, val or dev if any."
    )
    evaluation_split: str = Field(
        default="",
        description="Split the classifier is evaluated on; empty: Test if any, else a hold-out of the training split.",
    )
    holdout_fraction: float = Field(
        default=HOLDOUT_FRACTION, description="Share of each class's training images held out when no split evaluates."
    )
    field_root: str = Field(
        default="",
        description="Photos of the app's world (<root>/<split>/<class>/<photo> or <root>/<class>/<photo>, path or "
        "s3://), never trained on: the classifier is also evaluated on them, by class and by fruit; empty: none.",
    )
    field_class_depth: int = Field(
        default=0, description="class_depth of the field root (2: <split>/Fruit/Apple/.../<photo> is the class Apple)."
    )
    min_field_fruit_accuracy: float = Field(
        default=0.6, description="Fruit accuracy on the field photos under which their check warns."
    )
    classifier_max_iter: int = Field(
        default=ClassifierSettings.max_iter, description="Iterations after which a classifier fit counts as failed."
    )
    classifier_penalties: str = Field(
        default="",
        description="L2 penalties the classifier chooses among on validation data, comma-separated (e.g. 1e-4,1e-6); "
        "one penalty: no search, that one is fitted; empty: 1e-2 to 1e-7, a decade apart.",
    )
    min_accuracy: float = Field(default=0.95, description="Accuracy floor of the classifier's asset check.")
    max_rejected_share: float = Field(
        default=0.1, description="Most files that may be rejected as undecodable, in a run and in each class."
    )
    pca_refit_share: float = Field(
        default=DEFAULT_REFIT_SHARE,
        description="Refit the PCA when the training photos changed by this share (or a class came or went); "
        "else new photos are projected with the published PCA. 0 refits every time.",
    )

    reread_files: bool = Field(
        default=False,
        description="Read and hash every photo of the run's classes again, even those whose listing entry (path, size, "
        "modification time) is unchanged since they were indexed (`fruits run --full`).",
    )
    classifier_search_share: float = Field(
        default=DEFAULT_SEARCH_SHARE,
        description="Search the classifier's penalty again when the training photos changed by this share since the "
        "last search; else refit the penalty it chose. 0 searches every time.",
    )

    @property
    def model(self) -> ModelSettings:
        """Embedding settings, a local weights file made absolute so that the saved models can find it later."""
        weights = self.model_weights
        if weights != "imagenet" and not is_remote(weights):
            weights = os.path.abspath(local_path(weights))
        return ModelSettings(
            weights=weights,
            alpha=self.model_alpha,
            image_size=self.image_size,
            batch_size=self.batch_size,
            flip_average=self.flip_average,
        )

    @property
    def penalties(self) -> tuple[float, ...]:
        """classifier_penalties as numbers (the defaults when empty); text that is no list of numbers is a
        ValueError naming the setting."""
        if not self.classifier_penalties.strip():
            return ClassifierSettings.reg_params
        try:
            return tuple(float(text) for text in self.classifier_penalties.split(","))
        except ValueError:
            raise ValueError(
                f"classifier_penalties {self.classifier_penalties!r}: expected numbers separated by commas"
            ) from None

    @property
    def classifier(self) -> ClassifierSettings:
        return ClassifierSettings(
            reg_params=self.penalties, max_iter=self.classifier_max_iter, feedback_weight=self.feedback_weight
        )

    def roles(self, splits: list[str]) -> SplitRoles:
        """The role of each split among these (see spark_code.photos.splits); a named split that is missing is an
        error."""
        return resolve_roles(
            splits, self.training_split, self.validation_split, self.evaluation_split, self.holdout_fraction
        )

    def field_layout(self, s3: Any = None) -> ImagesLayout | None:
        """The field root's split and class folders, None without a field root; a field root that is no images root
        is a LayoutError that says it is the field root."""
        if not self.field_root:
            return None
        try:
            return discover_layout(self.field_root, s3, self.field_class_depth)
        except LayoutError as exc:
            raise LayoutError(f"field root (--field-root, FRUITS_FIELD_ROOT): {exc}") from exc

    def layout(self, s3: Any = None) -> ImagesLayout:
        """The images root's split and class folders, and the feedback area's class folders as the split FEEDBACK;
        an s3:// root is listed with `s3` (a boto3 client) if given."""
        named = (self.training_split, self.validation_split, self.evaluation_split)
        layout = discover_layout(self.images_root, s3, self.class_depth, named)
        return with_source(layout, FEEDBACK, self.feedback_root, s3) if self.feedback_root else layout


ENV_SETTINGS: dict[str, str] = {
    "images_root": "FRUITS_IMAGES_ROOT",
    "class_depth": "FRUITS_CLASS_DEPTH",
    "feedback_root": "FRUITS_FEEDBACK_ROOT",
    "feedback_weight": "FRUITS_FEEDBACK_WEIGHT",
    "feedback_sender_share": "FRUITS_FEEDBACK_SENDER_SHARE",
    "model_weights": "FRUITS_MODEL_WEIGHTS",
    "model_alpha": "FRUITS_MODEL_ALPHA",
    "image_size": "FRUITS_IMAGE_SIZE",
    "batch_size": "FRUITS_BATCH_SIZE",
    "flip_average": "FRUITS_FLIP_AVERAGE",
    "augment_views": "FRUITS_AUGMENT_VIEWS",
    "pca_variance": "FRUITS_PCA_VARIANCE",
    "pca_k": "FRUITS_PCA_K",
    "pca_max_k": "FRUITS_PCA_MAX_K",
    "training_split": "FRUITS_TRAINING_SPLIT",
    "validation_split": "FRUITS_VALIDATION_SPLIT",
    "evaluation_split": "FRUITS_EVALUATION_SPLIT",
    "holdout_fraction": "FRUITS_HOLDOUT_FRACTION",
    "field_root": "FRUITS_FIELD_ROOT",
    "field_class_depth": "FRUITS_FIELD_CLASS_DEPTH",
    "min_field_fruit_accuracy": "FRUITS_MIN_FIELD_FRUIT_ACCURACY",
    "classifier_max_iter": "FRUITS_CLASSIFIER_MAX_ITER",
    "classifier_penalties": "FRUITS_CLASSIFIER_PENALTIES",
    "min_accuracy": "FRUITS_MIN_ACCURACY",
    "max_rejected_share": "FRUITS_MAX_REJECTED_SHARE",
    "pca_refit_share": "FRUITS_PCA_REFIT_SHARE",
    "classifier_search_share": "FRUITS_CLASSIFIER_SEARCH_SHARE",
}
"""Settings field -> environment variable."""


FLAG_VALUES = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _parse(field: str, raw: str) -> object:
    """A FRUITS_* variable's text as its field's type; a flag that is not true/false/yes/no/1/0 is a clear error."""
    annotation = FruitsSettings.model_fields[field].annotation
    if annotation is bool:
        if raw.strip().lower() not in FLAG_VALUES:
            raise ValueError(f"{ENV_SETTINGS[field]}={raw!r}: expected true or false")
        return FLAG_VALUES[raw.strip().lower()]
    return annotation(raw)


def _env_value(field: str) -> object:
    """EnvVar (resolved at launch, shown as such in the UI) for str/int fields; floats and flags are read now, since
    Dagster resolves only string and integer EnvVars."""
    name = ENV_SETTINGS[field]
    annotation = FruitsSettings.model_fields[field].annotation
    if annotation in (float, bool):
        return _parse(field, os.environ[name])
    return EnvVar.int(name) if annotation is int else EnvVar(name)


def with_changes(settings: FruitsSettings, **changes: object) -> FruitsSettings:
    """The settings with some fields changed. Not pydantic's `model_copy`: Dagster builds the resource from the
    config it was constructed with, so a copy's changes never reached the run."""
    given = {name: settings.__dict__[name] for name in FruitsSettings.model_fields if name in settings.__dict__}
    return FruitsSettings(**{**given, **changes})


def settings_from_env() -> FruitsSettings:
    """The settings resource wired to the FRUITS_* variables that are set; the others keep their defaults."""
    return FruitsSettings(**{field: _env_value(field) for field, name in ENV_SETTINGS.items() if name in os.environ})


def output_root_from_env() -> str | EnvVar:
    """The IO managers' output root: FRUITS_OUTPUT_ROOT when set, else ./fruits-output."""
    return EnvVar(OUTPUT_ROOT_ENV) if OUTPUT_ROOT_ENV in os.environ else DEFAULT_OUTPUT_ROOT


def resolved_settings(overrides: dict[str, object]) -> FruitsSettings:
    """Plain settings as a run will see them: environment first, then explicit overrides (e.g. CLI options)."""
    from_env = {field: _parse(field, os.environ[name]) for field, name in ENV_SETTINGS.items() if name in os.environ}
    return FruitsSettings(**{**from_env, **overrides})


class PublishedOutputs(ConfigurableResource):
    """The output root as assets see it: where an asset finds what it published before (e.g. the PCA it may keep)."""

    output_root: str = Field(default=DEFAULT_OUTPUT_ROOT, description="Folder or s3:// prefix of all outputs.")

    def path(self, asset: str) -> str:
        return f"{self.output_root.rstrip('/')}/{asset}"


class EmbeddingStore(ConfigurableResource):
    """Where each photo's embedding is kept by content and settings (spark_code.features.embedding_store), beside the
    outputs, so that a photo is embedded once."""

    output_root: str = Field(default=DEFAULT_OUTPUT_ROOT, description="Folder or s3:// prefix of all outputs.")

    @property
    def base(self) -> str:
        return f"{self.output_root.rstrip('/')}/{STORE_FOLDER}"


def local_spark() -> LazyPySparkResource:
    """Spark driven from this process, with the settings of fruits_assets.defs.local_spark (a session started ahead of
    time with them is the one this resource gets)."""
    return LazyPySparkResource(spark_config=local_spark_conf())
