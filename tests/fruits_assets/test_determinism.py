"""Two runs of the main job on the same classes give identical embeddings and reduced features."""

import contextlib
import io
import json

from fruits_assets.cli import main
from spark_code.storage.parquet_store import read_arrow


def _rows(folder: str, column: str) -> dict[str, list[float]]:
    table = read_arrow(folder).to_pylist()
    paths = [row["path"] for row in table]
    assert len(paths) == len(set(paths))
    return {row["path"]: row[column] for row in table}


def test_a_second_run_gives_identical_embeddings_and_reduced_features(trained_run, small_root, tmp_path):
    first, _ = trained_run
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["run", "--images-root", str(small_root), "--output-root", str(tmp_path / "again"), "--json"])
    second = json.loads(stdout.getvalue())
    assert code == 0 and second["success"]
    assert second["pca_k"] == first["pca_k"]
    for asset, column in (("image_embeddings", "features"), ("reduced_features", "pca_features")):
        before, after = _rows(first["outputs"][asset], column), _rows(second["outputs"][asset], column)
        assert len(before) == 42
        assert sorted(before) == sorted(after)
        assert all(after[path] == values for path, values in before.items()), f"{asset} differ between runs"
