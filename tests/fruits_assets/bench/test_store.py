"""`fruits bench store` on a few rows, in the tests' session: both stores end with every key once and the figures
come out for each checkpoint."""

from delta.tables import DeltaTable

from fruits_assets.bench.store import FINGERPRINT, _segments_read, bench_store
from spark_code.features.embedding_store import read_store


def test_both_stores_hold_every_key_once_after_the_same_runs(spark, tmp_path):
    result = bench_store(spark, tmp_path, [1, 3], rows_per_run=20, class_rows=10, new_rows=2, repeats=1)
    assert [run["earlier_runs"] for run in result["runs"]] == [1, 3]
    assert all(run["delta_s"] > 0 and run["segments_s"] > 0 for run in result["runs"])
    # 3 earlier runs of 20 photos, and each timed run's 2 new ones
    delta, segments = (
        read_store(spark, str(tmp_path / "delta"), FINGERPRINT),
        _segments_read(spark, str(tmp_path / "segments"), FINGERPRINT),
    )
    assert delta.count() == segments.count() == delta.select("content_hash").distinct().count() == 64
    assert delta.exceptAll(segments).count() == 0
    assert result["runs"][1]["segments_files"] > result["runs"][0]["segments_files"]
    assert DeltaTable.isDeltaTable(spark, str(tmp_path / "delta"))
