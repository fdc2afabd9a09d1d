"""Declarative automation, evaluated tick by tick with Dagster's own evaluator on an instance whose events the test
records (runless): a new class, new photos in a class, and nothing new."""

import pytest
from dagster import AssetKey, AssetMaterialization, AssetObservation, DagsterInstance, evaluate_automation_conditions
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from fruits_assets.definitions import defs
from fruits_assets.defs.partitions import fruit_class_partitions

INGESTION = {"raw_images", "image_embeddings", "rejected_images"}
PER_CLASS = INGESTION | {"reduced_features"}


class Ticks:
    """The automation sensor's ticks, with the cursor carried from one to the next."""

    def __init__(self) -> None:
        self.instance = DagsterInstance.ephemeral()
        self.cursor = None

    def tick(self) -> dict[str, set]:
        result = evaluate_automation_conditions(defs, self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return {
            key.to_user_string(): set(result.get_requested_partitions(key))
            for key in {r.key for r in result.results}
            if result.get_num_requested(key)
        }

    def photos(self, name: str, version: str) -> None:
        """What the discovery sensor records when a class's listing changes."""
        observation = AssetObservation("class_photos", partition=name, tags={DATA_VERSION_TAG: version})
        self.instance.report_runless_asset_event(observation)

    def new_class(self, name: str, version: str = "v1") -> None:
        self.instance.add_dynamic_partitions(fruit_class_partitions.name, [name])
        self.photos(name, version)

    def materialized(self, assets: set[str], classes: list[str] | None = None) -> None:
        for asset in sorted(assets):
            for name in classes if asset in PER_CLASS else [None]:
                self.instance.report_runless_asset_event(AssetMaterialization(AssetKey(asset), partition=name))


@pytest.mark.slow
def test_new_class_new_photos_and_nothing_new():
    ticks = Ticks()
    assert ticks.tick() == {}  # the first tick only takes the state in
    for name in ("Banana", "Kiwi"):
        ticks.new_class(name)
    assert ticks.tick() == {asset: {"Banana", "Kiwi"} for asset in INGESTION}
    ticks.materialized(INGESTION, ["Banana", "Kiwi"])
    assert ticks.tick() == {"pca_model": {None}}
    ticks.materialized({"pca_model"})
    assert ticks.tick() == {"reduced_features": {"Banana", "Kiwi"}}
    ticks.materialized({"reduced_features"}, ["Banana", "Kiwi"])
    assert ticks.tick() == {"fruit_classifier": {None}}
    ticks.materialized({"fruit_classifier"})
    assert ticks.tick() == {"classifier_evaluation": {None}, "field_evaluation": {None}}
    ticks.materialized({"classifier_evaluation", "field_evaluation"})
    assert ticks.tick() == {}, "nothing new: nothing runs"
    assert ticks.tick() == {}

    # New photos in Kiwi: its ingestion only, then the PCA's decision, then Kiwi's projection and the classifier.
    ticks.photos("Kiwi", "v2")
    assert ticks.tick() == {asset: {"Kiwi"} for asset in INGESTION}
    ticks.materialized(INGESTION, ["Kiwi"])
    assert ticks.tick() == {"pca_model": {None}}, "the PCA decides before anything is projected"
    # The PCA kept itself (the refit rule): no materialization, only its observation.
    ticks.instance.report_runless_asset_event(AssetObservation("pca_model", metadata={"skipped": "kept"}))
    assert ticks.tick() == {"reduced_features": {"Kiwi"}}
    ticks.materialized({"reduced_features"}, ["Kiwi"])
    assert ticks.tick() == {"fruit_classifier": {None}}
    ticks.materialized({"fruit_classifier"})
    assert ticks.tick() == {"classifier_evaluation": {None}, "field_evaluation": {None}}
    ticks.materialized({"classifier_evaluation", "field_evaluation"})
    assert ticks.tick() == {}

    # A new class: its ingestion only; a PCA refit then projects every class again.
    ticks.new_class("Mango")
    assert ticks.tick() == {asset: {"Mango"} for asset in INGESTION}
    ticks.materialized(INGESTION, ["Mango"])
    assert ticks.tick() == {"pca_model": {None}}
    ticks.materialized({"pca_model"})
    assert ticks.tick() == {"reduced_features": {"Banana", "Kiwi", "Mango"}}
    ticks.materialized({"reduced_features"}, ["Banana", "Kiwi", "Mango"])
    assert ticks.tick() == {"fruit_classifier": {None}}


@pytest.mark.slow
def test_the_pca_waits_for_every_class():
    ticks = Ticks()
    ticks.tick()
    ticks.new_class("Banana")
    ticks.tick()
    ticks.materialized(INGESTION, ["Banana"])
    ticks.new_class("Kiwi")  # registered while Banana's embeddings were being computed
    requested = ticks.tick()
    assert "pca_model" not in requested and requested == {asset: {"Kiwi"} for asset in INGESTION}
    ticks.materialized(INGESTION, ["Kiwi"])
    assert ticks.tick() == {"pca_model": {None}}
