import pytest
from dagster import AssetKey, AssetsDefinition

from fruits_assets.definitions import all_assets, defs, resources_for
from fruits_assets.defs.assets.common import SPARK_RETRY
from fruits_assets.defs.local_spark import extra_spark_conf
from fruits_assets.defs.resources import resolved_settings, settings_from_env, with_changes


def test_the_asset_graph_has_every_stage_with_its_lineage():
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == {
        "class_photos",
        "raw_images",
        "image_embeddings",
        "rejected_images",
        "pca_model",
        "reduced_features",
        "fruit_classifier",
        "classifier_evaluation",
        "field_evaluation",
    }
    assert graph.get(AssetKey("raw_images")).parent_keys == {AssetKey("class_photos")}
    assert graph.get(AssetKey("image_embeddings")).parent_keys == {AssetKey("raw_images")}
    assert graph.get(AssetKey("pca_model")).parent_keys == {AssetKey("image_embeddings")}
    assert graph.get(AssetKey("reduced_features")).parent_keys == {AssetKey("image_embeddings"), AssetKey("pca_model")}
    assert graph.get(AssetKey("classifier_evaluation")).parent_keys == {
        AssetKey("reduced_features"),
        AssetKey("fruit_classifier"),
    }
    assert graph.get(AssetKey("field_evaluation")).parent_keys == {AssetKey("fruit_classifier")}
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups["raw_images"] == "ingestion" and groups["pca_model"] == "models"
    assert all(graph.get(key).description for key in graph.get_all_asset_keys())


def test_partitioned_assets_share_the_discovered_class_partitions():
    graph = defs.resolve_asset_graph()
    for name in ("class_photos", "raw_images", "image_embeddings", "rejected_images", "reduced_features"):
        assert graph.get(AssetKey(name)).partitions_def.name == "fruit_class"
    for name in ("pca_model", "fruit_classifier", "classifier_evaluation", "field_evaluation"):
        assert graph.get(AssetKey(name)).partitions_def is None


def test_every_computed_asset_has_a_code_version_and_an_automation_condition():
    graph = defs.resolve_asset_graph()
    computed = [key for key in graph.get_all_asset_keys() if graph.get(key).is_materializable]
    assert len(computed) == 8
    for key in computed:
        assert graph.get(key).code_version and graph.get(key).automation_condition is not None, key


def test_the_automation_sensors_are_on_by_default():
    from dagster import DefaultSensorStatus

    for name in ("fruit_class_sensor", "fruits_automation"):
        assert defs.get_sensor_def(name).default_status == DefaultSensorStatus.RUNNING


def test_the_code_versions_follow_the_settings_the_environment_sets(monkeypatch):
    """The UI's settings are the FRUITS_* variables (every setting: tests/fruits_assets/defs/test_one_judge.py)."""
    from fruits_assets.defs.automation import code_version

    before = {asset: code_version(asset) for asset in ("raw_images", "image_embeddings", "fruit_classifier")}
    monkeypatch.setenv("FRUITS_MODEL_ALPHA", "0.5")
    after = {asset: code_version(asset) for asset in before}
    assert after["image_embeddings"] != before["image_embeddings"]
    assert after["raw_images"] == before["raw_images"] and after["fruit_classifier"] == before["fruit_classifier"]


def test_an_unknown_deployment_is_refused():
    with pytest.raises(ValueError, match="DAGSTER_DEPLOYMENT='staging'"):
        resources_for("staging")


def test_prod_needs_its_bucket(monkeypatch):
    from fruits_assets.defs.emr_resources import ProdSettingsError

    monkeypatch.delenv("FRUITS_S3_BUCKET", raising=False)
    with pytest.raises(ProdSettingsError, match="FRUITS_S3_BUCKET"):
        resources_for("prod")


def test_prod_launches_steps_on_emr_with_s3_defaults(monkeypatch):
    from dagster import build_resources
    from dagster_aws.emr.pyspark_step_launcher import EmrPySparkStepLauncher

    monkeypatch.setenv("FRUITS_S3_BUCKET", "fruits-bucket")
    monkeypatch.setenv("FRUITS_EMR_CLUSTER_ID", "j-TEST")
    for name in ("FRUITS_IMAGES_ROOT", "FRUITS_OUTPUT_ROOT"):
        monkeypatch.delenv(name, raising=False)
    local, prod = resources_for("local"), resources_for("prod")
    assert set(local) <= set(prod)
    with build_resources({"launcher": prod["step_launcher"]}) as built:
        launcher = built.launcher
    assert isinstance(launcher, EmrPySparkStepLauncher) and launcher.cluster_id == "j-TEST"
    assert launcher.staging_bucket == "fruits-bucket" and launcher.deploy_local_job_package
    assert launcher.spark_config["spark"]["submit"]["deployMode"] == "cluster"
    with build_resources({"settings": prod["settings"]}) as built:  # what a run sees
        assert built.settings.images_root == "s3://fruits-bucket/images"
    assert prod["class_parquet_io_manager"].output_root == "s3://fruits-bucket/outputs"
    assert "spark.master" not in prod["pyspark"].spark_config  # spark-submit on the cluster says YARN


def test_every_spark_backed_asset_retries_with_backoff():
    policies = {a.node_def.name: a.node_def.retry_policy for a in all_assets if isinstance(a, AssetsDefinition)}
    assert len(policies) == 7 and set(policies.values()) == {SPARK_RETRY}
    assert SPARK_RETRY.max_retries == 2 and SPARK_RETRY.backoff is not None


def test_extra_spark_settings_come_from_json(monkeypatch):
    monkeypatch.setenv("FRUITS_SPARK_CONF", '{"spark.executor.memory": "1g", "spark.task.maxFailures": 8}')
    assert extra_spark_conf() == {"spark.executor.memory": "1g", "spark.task.maxFailures": "8"}
    monkeypatch.setenv("FRUITS_SPARK_CONF", "spark.executor.memory=1g")
    with pytest.raises(ValueError, match="FRUITS_SPARK_CONF is not valid JSON"):
        extra_spark_conf()


def test_changed_settings_reach_the_run(monkeypatch):
    from dagster import build_resources

    monkeypatch.setenv("FRUITS_IMAGES_ROOT", "/photos")
    changed = with_changes(settings_from_env(), pca_refit_share=0.0, reread_files=True)
    with build_resources({"settings": changed}) as built:
        seen = built.settings
    assert (seen.images_root, seen.pca_refit_share, seen.reread_files) == ("/photos", 0.0, True)


def test_flags_and_numbers_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("FRUITS_FLIP_AVERAGE", "false")
    monkeypatch.setenv("FRUITS_PCA_MAX_K", "48")
    settings = resolved_settings({})
    assert settings.flip_average is False and settings.model.flip_average is False and settings.pca_max_k == 48
    assert settings_from_env().flip_average is False
    monkeypatch.setenv("FRUITS_FLIP_AVERAGE", "maybe")
    with pytest.raises(ValueError, match="FRUITS_FLIP_AVERAGE='maybe': expected true or false"):
        resolved_settings({})
