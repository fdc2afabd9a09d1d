"""IO managers: every asset's output lands under the output root in a folder named after the asset."""

from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext, ResourceDependency
from dagster_pyspark import LazyPySparkResource
from pydantic import Field
from pyspark.sql import DataFrame

from fruits_assets.defs.resources import DEFAULT_OUTPUT_ROOT
from fruits_assets.defs.staleness import COMPUTED_FROM, PUBLISHED_NOTES
from fruits_assets.defs.steps import permanent_failures
from spark_code.models.ml_models import ModelArtifact, load_model, save_model
from spark_code.storage.class_tables import (
    WHOLE,
    published_stamps,
    read_classes,
    read_table,
    write_classes,
    write_table,
)

PUBLISHED_CLASSES_ONLY = "fruits/published_classes_only"
"""AssetIn metadata of the models' inputs: read the registered classes that are published, leaving out (with a
warning) those the discovery sensor registered but nothing materialized yet; a class with nothing published is
never trained on, and a run over some classes trains on every published one."""


def output_path(output_root: str, asset_name: str) -> str:
    """Where an asset's output lives: `<output_root>/<asset>`."""
    return f"{output_root.rstrip('/')}/{asset_name}"


class _OutputRootIOManager(ConfigurableIOManager):
    output_root: str = Field(default=DEFAULT_OUTPUT_ROOT, description="Folder or s3:// prefix of all outputs.")
    pyspark: ResourceDependency[LazyPySparkResource]

    def _path(self, context: InputContext | OutputContext) -> str:
        return output_path(self.output_root, context.asset_key.path[-1])


class ClassTableIOManager(_OutputRootIOManager):
    """Spark DataFrames as Delta Lake tables under `<output_root>/<asset>/`, partitioned by fruit class.

    Materializing some classes replaces exactly those classes in one commit (see spark_code.storage.class_tables);
    an unpartitioned asset's table is replaced as a whole.
    """

    def handle_output(self, context: OutputContext, obj: DataFrame) -> None:
        with permanent_failures():
            self._write(context, obj)

    def _write(self, context: OutputContext, obj: DataFrame) -> None:
        base = self._path(context)
        stamps = context.output_metadata.get(COMPUTED_FROM)
        stamps = getattr(stamps, "value", stamps)
        if not context.has_asset_partitions:
            notes = context.output_metadata.get(PUBLISHED_NOTES)
            notes = getattr(notes, "value", notes)
            rows = write_table(obj, base, (stamps or {}).get(WHOLE), notes)
            context.add_output_metadata({"path": MetadataValue.path(base), "row_count": MetadataValue.int(rows)})
            return
        classes = sorted(context.asset_partition_keys)
        counts = write_classes(obj, base, classes, stamps)
        metadata = {
            "path": MetadataValue.path(base),
            "row_count": MetadataValue.int(sum(counts.values())),
            "classes": MetadataValue.int(len(classes)),
        }
        if len(classes) > 1:
            metadata["rows_per_class"] = MetadataValue.json(counts)
        context.add_output_metadata(metadata)
        context.log.info(f"wrote {sum(counts.values())} rows of {len(classes)} class(es) to {base}")

    def load_input(self, context: InputContext) -> DataFrame:
        """The run's classes (or the whole table); a class never materialized fails the step at once."""
        with permanent_failures():
            if not context.has_asset_partitions:
                return read_table(self.pyspark.spark_session, self._path(context))
            classes = sorted(context.asset_partition_keys)
            if context.definition_metadata.get(PUBLISHED_CLASSES_ONLY):
                published = set(published_stamps(self._path(context)))
                waiting = [name for name in classes if name not in published]
                if waiting:
                    shown = ", ".join(waiting[:10]) + (f" and {len(waiting) - 10} more" if len(waiting) > 10 else "")
                    context.log.warning(f"{len(waiting)} class(es) registered but not materialized, left out: {shown}")
                classes = [name for name in classes if name in published] or classes  # none: the usual error
            return read_classes(self.pyspark.spark_session, self._path(context), classes)


class SparkModelIOManager(_OutputRootIOManager):
    """Spark ML models saved with their own writer under `<output_root>/<asset>/`, published atomically."""

    def handle_output(self, context: OutputContext, obj: ModelArtifact) -> None:
        path = self._path(context)
        save_model(self.pyspark.spark_session, obj, path)
        context.add_output_metadata({"path": MetadataValue.path(path)})

    def load_input(self, context: InputContext) -> ModelArtifact:
        with permanent_failures():
            return load_model(self.pyspark.spark_session, self._path(context))
