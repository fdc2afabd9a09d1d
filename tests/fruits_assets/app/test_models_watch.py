"""What the service tells of its model's field evaluation: the figures of the one published for that model."""

from fruits_assets.app.models_watch import field_figures, field_stamp
from spark_code.storage.class_tables import write_table

ROWS = [
    # label, predicted, fruit, predicted_fruit: 3 of 4 name the right fruit, 2 of 4 the right class
    ("Apple Red 1", "Apple Red 1", "Apple", "Apple"),
    ("Apple Red 1", "Apple Braeburn", "Apple", "Apple"),
    ("Kiwi", "Kiwi", "Kiwi", "Kiwi"),
    ("Kiwi", "Banana", "Kiwi", "Banana"),
]


def test_the_figures_are_those_of_the_field_evaluation_of_the_served_classifier(spark, tmp_path):
    root = str(tmp_path / "out")
    assert field_stamp(root) is None and field_figures(root, "v1", None) is None
    rows = spark.createDataFrame(ROWS, "label string, predicted string, fruit string, predicted_fruit string")
    write_table(rows, f"{root}/field_evaluation", "v1:0123abcd")
    stamp = field_stamp(root)
    assert stamp == "v1:0123abcd"
    assert field_figures(root, "v1", stamp) == {"photos": 4, "fruit_accuracy": 0.75, "accuracy": 0.5}
    assert field_figures(root, "v2", stamp) is None  # another classifier's evaluation says nothing of this one
    assert field_figures(root, "v1", "v1:stale") is None  # replaced since its stamp was read
