import json
import subprocess
import sys

import pyarrow.dataset as ds
import pytest

from fruits_assets.cli import main
from tests.conftest import REAL_CLASSES


def test_main_job_on_three_classes_materializes_every_asset(small_root, output_root, capsys):
    code = main(["run", "--images-root", str(small_root), "--output-root", str(output_root), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["success"]
    assert summary["classes"] == 3
    assert summary["images_indexed"] == summary["images_featurized"] == 42
    assert summary["images_rejected"] == 0
    assert 1 <= summary["pca_k"] <= 29 and summary["pca_explained_variance"] >= 0.95
    assert summary["checks"] == {
        "embeddings_are_1280_wide_without_nan": True,
        "every_indexed_file_is_embedded_or_rejected": True,
        "reduced_width_equals_k": True,
    }
    embeddings = ds.dataset(summary["outputs"]["image_embeddings"], partitioning="hive").to_table()
    assert sorted(set(embeddings.column("label").to_pylist())) == REAL_CLASSES
    assert {len(v) for v in embeddings.column("features").to_pylist()} == {1280}
    reduced = ds.dataset(summary["outputs"]["reduced_features"], partitioning="hive").to_table()
    assert {len(v) for v in reduced.column("pca_features").to_pylist()} == {summary["pca_k"]}
    assert (output_root / "pca_model" / "metadata").is_dir()


def test_a_subset_of_classes_and_the_human_summary(small_root, output_root, capsys):
    code = main(
        [
            "run",
            "--images-root",
            str(small_root),
            "--output-root",
            str(output_root),
            "--classes",
            "Kiwi",
            "Banana",
            "--pca-k",
            "5",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "fruits run succeeded" in out and "classes:            2" in out and "k=5," in out
    labels = ds.dataset(str(output_root / "reduced_features"), partitioning="hive").to_table().column("label")
    assert sorted(set(labels.to_pylist())) == ["Banana", "Kiwi"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--images-root", "/nonexistent/images"], "does not exist"),
        (["--classes", "Durian"], "unknown class(es) 'Durian'"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_code_2(small_root, tmp_path, args, message):
    base = ["--images-root", str(small_root), "--output-root", str(tmp_path)]
    completed = subprocess.run(
        [sys.executable, "-m", "fruits_assets.cli", "run", *base, *args], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 2
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr
