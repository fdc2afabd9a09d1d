import numpy as np
import pytest
from dagster import (
    AssetCheckResult,
    AssetKey,
    DagsterEventType,
    Output,
    build_asset_context,
    materialize,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from fruits_assets.app.predictor import FruitPredictor
from fruits_assets.definitions import all_assets
from fruits_assets.defs.assets.features import image_embeddings, reduced_features
from fruits_assets.defs.assets.ingestion import raw_images
from fruits_assets.defs.assets.models import pca_model
from fruits_assets.defs.resources import FruitsSettings, PublishedOutputs
from fruits_assets.main_job import persistent_instance
from spark_code.models.ml_models import MismatchedModelsError
from spark_code.storage.class_tables import read_arrow, read_classes
from tests.conftest import WEIGHTS, copy_sample, numpy_pca_k
from tests.fruits_assets.conftest import make_instance, make_resources
from tests.images_factory import BAD_IMAGES, GOOD_IMAGES, HEADER_INTACT, write_files


def _metadata(result, asset: str) -> dict:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(asset)]
    return {k: v.value for k, v in events[0].event_specific_data.materialization.metadata.items()}


def _table(root, asset):
    return read_arrow(str(root / asset)).to_pandas()


@pytest.fixture(scope="module")
def generated_root(tmp_path_factory, small_root):
    """One class of generated images, good and bad, plus a real class."""
    root = copy_sample(small_root, tmp_path_factory.mktemp("generated"), ["Kiwi"], {"Training": 4, "Test": 2})
    write_files(root / "Training" / "Made Up", {**GOOD_IMAGES, **BAD_IMAGES})
    return root


@pytest.mark.slow
def test_one_class_of_generated_images_is_indexed_embedded_or_rejected(generated_root, output_root):
    result = materialize(
        [raw_images, image_embeddings],
        selection=[AssetKey("raw_images"), AssetKey("image_embeddings"), AssetKey("rejected_images")],
        partition_key="Made Up",
        resources=make_resources(generated_root, output_root, max_rejected_share=1.0),  # half bad on purpose
        instance=make_instance(["Kiwi", "Made Up"]),
        raise_on_error=False,
    )
    assert result.success
    assert _metadata(result, "raw_images")["files_indexed"] == len(GOOD_IMAGES) + len(BAD_IMAGES)
    assert _metadata(result, "raw_images")["files_not_images"] == len(BAD_IMAGES) - len(HEADER_INTACT)
    assert _metadata(result, "raw_images")["thumbnails"].startswith("![sample images](data:image/png;base64,")
    assert _metadata(result, "image_embeddings")["row_count"] == len(GOOD_IMAGES)
    assert _metadata(result, "rejected_images")["row_count"] == len(BAD_IMAGES)
    assert _metadata(result, "image_embeddings")["path"] == str(output_root / "image_embeddings")
    embeddings = _table(output_root, "image_embeddings")
    rejected = _table(output_root, "rejected_images")
    assert set(embeddings["label"]) == {"Made Up"}
    assert {p.rsplit("/", 1)[-1] for p in rejected["path"]} == set(BAD_IMAGES)
    assert rejected["reason"].str.len().min() > 0
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "embeddings_are_1280_wide_without_nan": True,
        "every_indexed_file_is_embedded_or_rejected": True,
        "rejected_share_within_limit": True,
    }


def _run_events(run_id: str, event_type: DagsterEventType) -> list:
    """The events of one run of the persistent instance (the session's trained run was recorded there)."""
    return [r.dagster_event for r in persistent_instance().all_logs(run_id, of_type=event_type)]


def test_the_trained_run_materialized_every_asset_over_its_range_of_classes_with_metadata(trained_run):
    """The session's trained run: every asset of 3 real classes in one Dagster run over the partition range."""
    summary, output_root = trained_run
    (run_id,) = summary["run_ids"]
    metadata = {}
    for event in _run_events(run_id, DagsterEventType.ASSET_MATERIALIZATION):
        materialization = event.event_specific_data.materialization
        metadata[materialization.asset_key.path[-1]] = {k: v.value for k, v in materialization.metadata.items()}
    classes = ["Apple Braeburn", "Banana", "Kiwi"]
    assert metadata["image_embeddings"]["row_count"] == 42
    assert metadata["image_embeddings"]["rows_per_class"] == {name: 14 for name in classes}
    pca = metadata["pca_model"]
    assert pca["k"] == summary["pca_k"] and pca["training_rows"] == 30
    assert pca["cumulative_variance"].startswith("![cumulative explained variance](data:image/png;base64,")
    reduced = _table(output_root, "reduced_features")
    assert len(reduced) == 42 and set(reduced["pca_features"].map(len)) == {pca["k"]}
    assert set(reduced.columns) == {"path", "label", "split", "pca_features", "pca_version"}
    checks = _run_events(run_id, DagsterEventType.ASSET_CHECK_EVALUATION)
    assert len(checks) == 7 and all(e.event_specific_data.passed for e in checks)
    evaluation = metadata["classifier_evaluation"]
    assert evaluation["accuracy"] == 1.0 and evaluation["images"] == 12
    assert evaluation["confusion_matrix"].startswith("![confusion matrix](data:image/png;base64,")
    assert metadata["fruit_classifier"]["classes"] == 3


@pytest.mark.slow
def test_a_new_pca_alone_is_never_paired_with_the_previous_classifier(small_root, trained_copy):
    """A run that stops once it has published a new PCA (here: the PCA alone, with another k) leaves it beside the
    previous classifier. Before: predicted from the mismatched pair, silently."""
    classes = ["Apple Braeburn", "Banana", "Kiwi"]
    photo = next((small_root / "Test" / "Kiwi").iterdir())
    assert FruitPredictor(str(trained_copy)).predict(str(photo)).top[0][0] == "Kiwi"
    again = {"resources": make_resources(small_root, trained_copy, pca_k=5), "instance": make_instance(classes)}
    assert materialize(all_assets, selection=[AssetKey("pca_model")], **again).success
    with pytest.raises(MismatchedModelsError, match="trained on PCA version"):
        FruitPredictor(str(trained_copy))
    stale = materialize(all_assets, selection=[AssetKey("fruit_classifier")], raise_on_error=False, **again)
    failure = next(e for e in stale.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert "were not projected by the published PCA" in failure.description
    assert not [e for e in stale.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    tags = {ASSET_PARTITION_RANGE_START_TAG: classes[0], ASSET_PARTITION_RANGE_END_TAG: classes[-1]}
    selection = [AssetKey("reduced_features"), AssetKey("fruit_classifier")]
    assert materialize(all_assets, selection=selection, tags=tags, **again).success
    refreshed = FruitPredictor(str(trained_copy))
    assert refreshed.components.shape[1] == 5 and refreshed.predict(str(photo)).top[0][0] == "Kiwi"


def test_rematerializing_one_class_leaves_the_others_untouched(small_root, output_root, tmp_path, spark):
    # a copy: the session's small_root stays as the trained run indexed it
    images = copy_sample(small_root, tmp_path / "images", ["Banana", "Kiwi"], {"Training": 10, "Test": 4})
    resources = make_resources(images, output_root)
    instance = make_instance(["Banana", "Kiwi"])
    for name in ("Banana", "Kiwi"):
        assert materialize([raw_images], partition_key=name, resources=resources, instance=instance).success
    before = read_classes(spark, str(output_root / "raw_images"), ["Banana"]).orderBy("path").collect()
    (images / "Training" / "Kiwi" / "extra.jpg").write_bytes(GOOD_IMAGES["rgb.jpg"])
    assert materialize([raw_images], partition_key="Kiwi", resources=resources, instance=instance).success
    assert read_classes(spark, str(output_root / "raw_images"), ["Banana"]).orderBy("path").collect() == before
    assert read_classes(spark, str(output_root / "raw_images"), ["Kiwi"]).count() == 15


def test_unknown_class_partition_fails_with_a_clear_message(small_root, output_root):
    result = materialize(
        [raw_images],
        partition_key="Durian",
        resources=make_resources(small_root, output_root),
        instance=make_instance(["Durian"]),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "unknown class(es) 'Durian'" in failure.step_failure_data.user_failure_data.description


def test_pca_model_and_reduced_features_invoked_directly(spark, small_root, output_root):
    """The asset functions themselves, with build_asset_context, on embeddings made by the pipeline."""
    classes = ["Banana", "Kiwi"]
    resources = make_resources(small_root, output_root)
    materialize(
        [raw_images, image_embeddings],
        resources=resources,
        instance=make_instance(classes),
        tags={ASSET_PARTITION_RANGE_START_TAG: classes[0], ASSET_PARTITION_RANGE_END_TAG: classes[-1]},
    )
    embeddings = read_classes(spark, str(output_root / "image_embeddings"), classes)
    settings = FruitsSettings(images_root=str(small_root), model_weights=str(WEIGHTS), pca_variance=0.9)
    outputs = PublishedOutputs(output_root=str(output_root))  # no PCA published there yet: it is fitted
    events = list(
        pca_model(
            build_asset_context(), step_launcher=None, image_embeddings=embeddings, settings=settings, outputs=outputs
        )
    )
    fitted = next(e for e in events if isinstance(e, Output))
    k = fitted.metadata["k"].value
    training = np.array([row["features"] for row in embeddings.where("split = 'Training'").collect()])
    expected_k, explained = numpy_pca_k(training, 0.9)
    assert k == expected_k and fitted.metadata["explained_variance"].value == pytest.approx(explained, abs=1e-6)
    context = build_asset_context(partition_key="Kiwi", instance=make_instance(classes))
    kiwi = embeddings.where("label = 'Kiwi'")
    events = list(
        reduced_features(
            context,
            step_launcher=None,
            image_embeddings=kiwi,
            pca_model=fitted.value,
            settings=settings,
            pyspark=resources["pyspark"],
        )
    )
    reduced = next(e for e in events if isinstance(e, Output)).value
    assert next(e for e in events if isinstance(e, AssetCheckResult)).passed
    assert reduced.count() == 14
    assert {len(r["pca_features"]) for r in reduced.collect()} == {k}


def test_a_photo_is_embedded_once_whatever_its_name_and_per_settings(small_root, tmp_path, spark):
    """The embedding store: a second materialization reads no photo and runs the model on nothing; a copy under
    another name is read but not embedded, a changed photo is read and embedded again, a deleted one leaves the
    class; other settings have their own keys."""
    images = copy_sample(small_root, tmp_path / "images", ["Kiwi"], {"Training": 4, "Test": 1})
    output_root = tmp_path / "out"

    def embed(**settings) -> tuple[int, int, dict[str, list[float]]]:
        result = materialize(
            [raw_images, image_embeddings],
            selection=[AssetKey("raw_images"), AssetKey("image_embeddings"), AssetKey("rejected_images")],
            partition_key="Kiwi",
            resources=make_resources(images, output_root, **settings),
            instance=make_instance(["Kiwi"]),
        )
        rows = read_classes(spark, str(output_root / "image_embeddings"), ["Kiwi"]).collect()
        read = _metadata(result, "raw_images")["files_read"]
        return read, _metadata(result, "image_embeddings")["images_embedded"], {r["path"]: r["features"] for r in rows}

    read, embedded, first = embed()
    assert (read, embedded, len(first)) == (5, 5, 5)
    read, embedded, again = embed()
    assert (read, embedded) == (0, 0) and again == first  # bit for bit

    photos = sorted((images / "Training" / "Kiwi").iterdir())
    copy = photos[0].with_name("copy of the first.jpg")
    copy.write_bytes(photos[0].read_bytes())
    photos[1].write_bytes(GOOD_IMAGES["rgb.jpg"])  # changed under the same name
    photos[2].unlink()
    read, embedded, changed = embed()
    uri = {path.rsplit("/", 1)[1]: path for path in changed}
    assert (read, embedded, len(changed)) == (2, 1, 5)
    assert changed[uri[copy.name]] == first[uri[photos[0].name]]
    assert changed[uri[photos[1].name]] != first[uri[photos[1].name]]
    assert photos[2].name not in uri

    assert embed(flip_average=False)[:2] == (0, 4)  # other settings, other keys (4 distinct contents among the 5)
    assert embed()[:2] == (0, 0)  # and back: nothing twice
    assert embed(reread_files=True)[:2] == (5, 0)  # `fruits run --full`: every photo read and hashed again
