"""What is up to date under an output root, decided from the output root itself and the images' listing.

Every class output records, with its rows, a stamp saying what it was computed from
(spark_code.storage.class_tables):
- raw_images: the class's data version (spark_code.photos.listing: its files' names, sizes, times or ETags, listed
  before its files are read) and the index's format;
- image_embeddings and rejected_images: the stamp of the index rows they embedded and the embedding settings'
  fingerprint;
- reduced_features: the stamp of the embeddings they projected and the version of the PCA that projected them.
The classifier's notes record a digest of the stamps of the reduced features it was trained on and of its settings,
and the evaluation's stamp the classifier it evaluated. Each stage's stamp comes from its inputs (the stamps
published with the rows it read: spark_code.storage.class_tables.input_stamps), never from a second look at the
photos, so a photo that arrives or leaves during a run leaves every later stage stale.
A stamp that differs from what the current listing and settings would give means the output is stale: another images
root, another output root, a deleted output or changed photos all show as stale, whatever the Dagster instance
remembers. Random weights have no fingerprint: their outputs are never up to date.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict
from typing import Any

from fruits_assets.defs.resources import FruitsSettings
from spark_code.features.embedding_store import settings_fingerprint
from spark_code.models.ml_models import VERSION, published_notes
from spark_code.models.pca_refit import FIT_SETTINGS, TRAINING_ROWS
from spark_code.photos.augment import AUGMENTATION_VERSION
from spark_code.photos.image_files import INDEX_FORMAT
from spark_code.photos.layout import ImagesLayout
from spark_code.photos.listing import class_versions
from spark_code.storage.class_tables import WHOLE, published_stamps

COMPUTED_FROM = "computed_from"
"""Output metadata key: {class (or "all"): its stamp}, which the IO manager publishes with the rows."""
PUBLISHED_NOTES = "published_notes"
"""Output metadata key of a whole table: notes the IO manager publishes with its rows (what the app reads without
Spark)."""
INPUTS = "inputs"
"""Classifier notes key: the digest of what it was trained on (classifier_inputs)."""


def _output(root: str, asset: str) -> str:
    return f"{root.rstrip('/')}/{asset}"


def index_stamps(listing: dict[str, str]) -> dict[str, str]:
    """Per class, what its index is computed from: its data version, and the index's columns (INDEX_FORMAT), so an
    index written without content hashes is stale."""
    return {name: f"{version}:index-{INDEX_FORMAT}" for name, version in listing.items()}


def embedding_stamps(indexed: dict[str, str | None], settings: FruitsSettings) -> dict[str, str]:
    """Per class, what its embeddings are computed from: its index (the stamp of the index rows embedded) and the
    embedding settings."""
    fingerprint = settings_fingerprint(settings.model) or f"random-{uuid.uuid4().hex}"
    if settings.augment_views:
        augment = json.dumps(augment_settings(settings), sort_keys=True)
        fingerprint += ":" + hashlib.sha256(augment.encode()).hexdigest()[:8]
    return {name: f"{stamp}:{fingerprint}" for name, stamp in indexed.items()}


def reduced_stamps(embedded: dict[str, str | None], pca_version: str | None) -> dict[str, str]:
    """Per class, what its reduced features are computed from: its embeddings and the PCA version."""
    return {name: f"{stamp}:{pca_version}" for name, stamp in embedded.items()}


PHOTO_SETTINGS = ("training_split", "validation_split", "evaluation_split", "holdout_fraction")
"""The settings that choose which photos train, validate and evaluate."""


def embedding_settings(settings: FruitsSettings) -> dict[str, Any]:
    """The embedding settings an embedding depends on (the batch size changes none)."""
    embedding = asdict(settings.model)
    embedding.pop("batch_size")
    return embedding


def augment_settings(settings: FruitsSettings) -> dict[str, Any]:
    """What the augmented views among a class's embeddings are made with: their number, the recipe's version and the
    split they are made of (none without views). The PCA (fitted on the views too) and the classifier follow the
    embeddings through their stamps and training rows."""
    if not settings.augment_views:
        return {}
    augment = {"views": settings.augment_views, "version": AUGMENTATION_VERSION}
    return {"augment": {**augment, "training_split": settings.training_split}}


def asset_settings(asset: str, settings: FruitsSettings) -> dict[str, Any]:
    """The settings an asset's output depends on: the one source of what a change of settings makes stale, for the
    planner (its stamps and notes, below: what `fruits run` recomputes) and for the UI (the assets' code versions,
    fruits_assets.defs.automation). The embeddings' stamp names the weights by content (their fingerprint), the UI by
    name; every other setting is the same value in both."""
    photos = {name: getattr(settings, name) for name in PHOTO_SETTINGS}
    embedding = {"embedding": embedding_settings(settings)}
    fit = {"variance": settings.pca_variance, "k": settings.pca_k, "max_k": settings.pca_max_k}
    by_asset: dict[str, dict[str, Any]] = {
        "raw_images": {},
        "image_embeddings": {**embedding, **augment_settings(settings)},
        "rejected_images": {**embedding, **augment_settings(settings)},
        "pca_model": {**embedding, "photos": photos, FIT_SETTINGS: fit},
        "reduced_features": {},
        "fruit_classifier": {"photos": photos, "classifier": asdict(settings.classifier)},
        "classifier_evaluation": {"photos": photos, "min_accuracy": settings.min_accuracy},
        "field_evaluation": {
            **embedding,
            "field_root": settings.field_root,
            "field_class_depth": settings.field_class_depth,
            "min_field_fruit_accuracy": settings.min_field_fruit_accuracy,
        },
    }
    return json.loads(json.dumps(by_asset[asset]))


def settings_digest(asset: str, settings: FruitsSettings) -> str:
    """A short digest of asset_settings (empty when the asset depends on no setting)."""
    found = asset_settings(asset, settings)
    return hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()[:8] if found else ""


def classifier_inputs(reduced: dict[str, str | None], settings: FruitsSettings) -> str:
    """A digest of what the classifier is trained on: every class's reduced features and its settings."""
    described = {"reduced": sorted(reduced.items()), **asset_settings("fruit_classifier", settings)}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def evaluation_stamp(classifier_version: str | None, settings: FruitsSettings) -> str:
    """What an evaluation is computed from: the classifier, and its settings (the photos it evaluates on, the
    accuracy floor its check applies). The floor ends it, as the app's quality gate reads it
    (fruits_assets.app.models_watch.evaluation_verdict)."""
    return f"{classifier_version}:{settings_digest('classifier_evaluation', settings)}:{settings.min_accuracy}"


def field_stamp(classifier_version: str | None, listing: dict[str, str], settings: FruitsSettings) -> str:
    """What a field evaluation is computed from: the classifier, the field photos (each class's data version, listed
    before they are read) and its settings."""
    described = {"field": sorted(listing.items()), "settings": settings_digest("field_evaluation", settings)}
    return f"{classifier_version}:{hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]}"


def pca_context(settings: FruitsSettings, roles: dict[str, Any]) -> dict[str, Any]:
    """What a PCA fit depends on besides the photos (see spark_code.models.pca_refit), as its notes hold it (JSON): its
    settings and the split roles they resolve to."""
    return {**asset_settings("pca_model", settings), "roles": json.loads(json.dumps(roles))}


def stale(stamps: dict[str, dict], expected: dict[str, str]) -> list[str]:
    """The classes whose published stamp is not the expected one (never published, or nothing expected, included),
    sorted."""
    return sorted(
        name for name, stamp in expected.items() if stamp is None or stamps.get(name, {}).get("stamp") != stamp
    )


def published_classes(root: str, asset: str = "image_embeddings") -> set[str]:
    """The classes an output publishes."""
    return set(published_stamps(_output(root, asset))) - {WHOLE}


class Staleness:
    """The state of one output root against one listing of the images and one set of settings.

    `classes` are those the models are trained on; `refresh` (default: all of them) those whose photos are listed
    again: the others are taken as their index is published (`fruits run --classes` refreshes some classes and
    trains on every published one)."""

    def __init__(
        self,
        root: str,
        settings: FruitsSettings,
        layout: ImagesLayout,
        classes: list[str],
        refresh: list[str] | None = None,
    ) -> None:
        self.root = root
        self.settings = settings
        self.classes = classes
        listed = classes if refresh is None else [name for name in classes if name in set(refresh)]
        self.refreshed = listed  # the classes whose photos are listed now: a run may redo those
        kept = self.stamps("raw_images")
        self.indexed = {
            **{name: kept.get(name, {}).get("stamp") for name in classes},
            **index_stamps(class_versions(layout, listed)),
        }
        self.embedded = embedding_stamps(self.indexed, settings)
        self.roles = asdict(settings.roles(layout.splits))

    def stamps(self, asset: str) -> dict[str, dict]:
        return published_stamps(_output(self.root, asset))

    def notes(self, asset: str) -> dict[str, Any] | None:
        return published_notes(_output(self.root, asset))

    def stale_ingestion(self) -> list[str]:
        """Classes whose index, embeddings or rejected photos are missing or not from the current photos/settings."""
        found = set(stale(self.stamps("raw_images"), self.indexed))
        for asset in ("image_embeddings", "rejected_images"):
            found |= set(stale(self.stamps(asset), self.embedded))
        return sorted(found)

    def pca_may_be_stale(self) -> bool:
        """Whether the PCA step must run (it applies the refit rule itself): no PCA, other settings, or other classes
        with embedded photos (with or without training photos) than it was fitted for."""
        notes = self.notes("pca_model")
        if notes is None:
            return True
        context = pca_context(self.settings, self.roles)
        fitted_classes = notes.get("classes", notes.get(TRAINING_ROWS, {}))
        embedded = self.stamps("image_embeddings")
        with_photos = {name for name in self.classes if embedded.get(name, {}).get("rows", 0)}
        return set(fitted_classes) != with_photos or any(notes.get(k) != v for k, v in context.items())

    def pca_version(self) -> str | None:
        notes = self.notes("pca_model")
        return None if notes is None else notes.get(VERSION)

    def stale_reduced(self) -> list[str]:
        return stale(self.stamps("reduced_features"), reduced_stamps(self.embedded, self.pca_version()))

    def classifier_stale(self) -> bool:
        notes = self.notes("fruit_classifier")
        expected = classifier_inputs(reduced_stamps(self.embedded, self.pca_version()), self.settings)
        return notes is None or notes.get(INPUTS) != expected

    def evaluation_stale(self) -> bool:
        notes = self.notes("fruit_classifier")
        found = self.stamps("classifier_evaluation").get(WHOLE, {}).get("stamp")
        return notes is None or found != evaluation_stamp(notes.get(VERSION), self.settings)

    def field_stale(self) -> bool:
        """Whether the field evaluation is missing or not of the published classifier, the field photos as they are
        listed now and the settings; never without a field root or a classifier."""
        notes = self.notes("fruit_classifier")
        layout = self.settings.field_layout()
        if layout is None or notes is None:
            return False
        expected = field_stamp(notes.get(VERSION), class_versions(layout, layout.classes), self.settings)
        return self.stamps("field_evaluation").get(WHOLE, {}).get("stamp") != expected

    def counts(self, asset: str) -> int:
        """Rows published for the run's classes."""
        stamps = self.stamps(asset)
        return sum(stamps.get(name, {}).get("rows", 0) for name in self.classes)
