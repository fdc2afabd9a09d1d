"""What triggers what under `dagster dev`: Dagster's declarative automation, and the code versions that show a
change of code or settings as staleness in the UI.

- The discovery sensor registers each new class folder as a partition and records, per class, an observation of
  `class_photos` whose data version is the listing's (spark_code.photos.listing): new, changed or deleted photos
  change it.
- raw_images and image_embeddings of a class run when the class is new or its photos' data version changed (eager).
- pca_model runs the tick after any class's embeddings changed, once every class has them; it refits by the rule
  of spark_code.models.pca_refit, else keeps the published PCA and records why (no materialization, so nothing
  downstream is recomputed for it).
- reduced_features of a class run when its embeddings or the PCA changed, the classifier and its evaluation when
  any reduced features changed, the field evaluation when the classifier changed. The PCA and everything after it
  wait while one of their upstream steps is requested in the same tick or running, so that they never mix a PCA
  decision in flight with the old one.
The automation sensor is on by default; the UI's Automation tab shows, for each requested run, which condition held.
"""

from __future__ import annotations

import os

from dagster import AssetSelection, AutomationCondition, AutomationConditionSensorDefinition, DefaultSensorStatus

from fruits_assets.defs.resources import FruitsSettings, resolved_settings
from fruits_assets.defs.staleness import settings_digest
from spark_code.photos.images import PREPROCESSING_VERSION

CHANGED_UPSTREAM = AutomationCondition.eager()
"""New partition, or an upstream update, and nothing upstream missing or in progress."""

DECISION_PENDING = (
    AutomationCondition.any_deps_match(AutomationCondition.newly_updated())
    .since(AutomationCondition.newly_requested() | AutomationCondition.newly_updated())
    .with_label("has an upstream update it has not acted on")
)
"""True for an asset whose inputs were updated since it was last requested or updated: it has yet to act on them.
(Dagster's will_be_requested only sees steps that can share the downstream's run, which a per-class and a
whole-dataset asset cannot, so it cannot tell a downstream step to wait for them.)"""

AFTER_UPSTREAM_DECISIONS = (
    # First, so that the pending state is kept for every partition on every tick (an AND narrows what it evaluates).
    ~AutomationCondition.any_deps_match(DECISION_PENDING).with_label("no upstream step still to act")
    & ~AutomationCondition.any_deps_match(AutomationCondition.will_be_requested()).with_label(
        "no upstream step requested in this tick"
    )
    & AutomationCondition.eager()
).with_label("eager, once the upstream steps have acted")

AUTOMATION_ENV = "FRUITS_AUTOMATION"
"""`off` starts the automation sensor stopped (turn it on in the UI's Automation page); anything else: running."""

fruits_automation_sensor = AutomationConditionSensorDefinition(
    "fruits_automation",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.STOPPED
    if os.environ.get(AUTOMATION_ENV, "").strip().lower() == "off"
    else DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    emit_backfills=False,
    description="Materializes new classes, changed photos and what depends on them (fruits_assets.defs.automation).",
)

CODE_VERSIONS = {
    "raw_images": "2",
    "image_embeddings": f"2.p{PREPROCESSING_VERSION}",
    "rejected_images": f"2.p{PREPROCESSING_VERSION}",
    "pca_model": "2",
    "reduced_features": "2",
    "fruit_classifier": "2",
    "classifier_evaluation": "2",
    "field_evaluation": f"1.p{PREPROCESSING_VERSION}",
}
"""Bumped by hand when an asset's code changes what it computes."""


def code_version(asset: str, settings: FruitsSettings | None = None) -> str:
    """The asset's code version and a digest of the settings it depends on (fruits_assets.defs.staleness.asset_settings,
    the planner's source too), as the environment sets them by default (the UI's settings): changing either shows
    the asset as stale in the UI."""
    digest = settings_digest(asset, settings or resolved_settings({}))
    return f"{CODE_VERSIONS[asset]}-{digest}" if digest else CODE_VERSIONS[asset]
