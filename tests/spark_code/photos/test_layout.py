import socket

import boto3
import pytest

from spark_code.photos.layout import (
    NO_SPLIT,
    LayoutError,
    discover_layout,
    empty_files,
    validate_class_name,
    with_source,
)


def test_discovers_every_class_and_split_of_the_shared_sample(shared_root):
    layout = discover_layout(str(shared_root))
    assert sorted(layout.classes_by_split) == ["Test", "Training"]
    assert len(layout.classes) == 95
    assert "Apple Red Yellow 1" in layout.classes


def test_class_dirs_span_all_splits(small_root):
    layout = discover_layout(str(small_root))
    assert layout.class_dirs(["Kiwi"]) == [f"{small_root}/Test/Kiwi", f"{small_root}/Training/Kiwi"]


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(LayoutError, match="does not exist"):
        discover_layout(str(tmp_path / "nowhere"))


def test_empty_root_is_a_clear_error(tmp_path):
    (tmp_path / "Training").mkdir()
    with pytest.raises(LayoutError, match="holds no class folders"):
        discover_layout(str(tmp_path))


def test_unset_root_is_a_clear_error():
    with pytest.raises(LayoutError, match="FRUITS_IMAGES_ROOT"):
        discover_layout("")


def test_unknown_class_is_a_clear_error(small_root):
    with pytest.raises(LayoutError, match="unknown class.*'Durian'"):
        discover_layout(str(small_root)).class_dirs(["Kiwi", "Durian"])


def test_hidden_folders_are_not_classes(small_root, tmp_path):
    (tmp_path / "Training" / "Kiwi").mkdir(parents=True)
    (tmp_path / "Training" / ".cache").mkdir()
    (tmp_path / "Training" / "_tmp").mkdir()
    assert discover_layout(str(tmp_path)).classes == ["Kiwi"]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "..\\x", ".hidden", "_private"])
def test_class_names_that_could_escape_or_hide_are_refused(name):
    with pytest.raises(LayoutError):
        validate_class_name(name)


def test_ordinary_class_names_pass():
    assert validate_class_name("Pêche 'plate' 2") == "Pêche 'plate' 2"


def test_a_class_folder_linked_outside_the_root_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"private")
    root = tmp_path / "images"
    (root / "Training" / "Kiwi").mkdir(parents=True)
    (root / "Training" / "Evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(LayoutError, match="Training/Evil .* leads outside the images root"):
        discover_layout(str(root))


def test_a_split_linked_outside_the_root_is_refused(tmp_path):
    (tmp_path / "elsewhere" / "Kiwi").mkdir(parents=True)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "Training").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(LayoutError, match="leads outside the images root"):
        discover_layout(str(tmp_path / "images"))


def test_links_inside_the_root_are_fine(tmp_path):
    (tmp_path / "Training" / "Kiwi").mkdir(parents=True)
    (tmp_path / "Test").symlink_to(tmp_path / "Training", target_is_directory=True)
    assert discover_layout(str(tmp_path)).classes_by_split == {"Test": ["Kiwi"], "Training": ["Kiwi"]}


def test_class_folders_holding_images_are_the_classes_without_splits(tmp_path):
    for name in ("apple_braeburn_1", "Kiwi fruit é", "007"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "photo.jpg").write_bytes(b"jpeg")
    (tmp_path / "Kiwi fruit é" / "nested").mkdir()  # a deeper folder keeps its class
    (tmp_path / "empty").mkdir()  # a class with no photo yet is still a class
    layout = discover_layout(str(tmp_path))
    assert not layout.has_splits and layout.splits == [NO_SPLIT]
    assert layout.classes == ["007", "Kiwi fruit é", "apple_braeburn_1", "empty"]
    assert layout.class_dirs(["007"]) == [f"{tmp_path}/007"]


def test_split_folders_with_any_names(tmp_path):
    for split in ("train", "val", "holdout"):
        (tmp_path / split / "Kiwi").mkdir(parents=True)
        (tmp_path / split / "Kiwi" / "photo.jpg").write_bytes(b"jpeg")
    layout = discover_layout(str(tmp_path))
    assert layout.has_splits and layout.splits == ["holdout", "train", "val"]
    assert layout.classes == ["Kiwi"]


@pytest.mark.parametrize(
    ("stray", "expected"),
    [
        ("Training/Thumbs.db", {"Test": ["Apple", "Banana"], "Training": ["Apple", "Banana"]}),  # Windows Explorer's
        ("Test/labels.csv", {"Test": ["Apple", "Banana"], "Training": ["Apple", "Banana"]}),
        ("README.md", {"Test": ["Apple", "Banana"], "Training": ["Apple", "Banana"]}),  # beside the splits: ignored
    ],
)
def test_a_stray_file_in_a_split_folder_named_as_a_split_keeps_the_splits(tmp_path, stray, expected):
    """Before, one file in any root folder made every root folder a class: all the training photos one class
    `Training`, the classes taken from Test alone."""
    _write_tree(tmp_path, [f"{split}/{name}/1.jpg" for split in ("Training", "Test") for name in ("Apple", "Banana")])
    _write_tree(tmp_path, [stray])
    layout = discover_layout(str(tmp_path))
    assert layout.classes_by_split == expected
    assert layout.class_dirs(["Apple"]) == [f"{tmp_path}/Test/Apple", f"{tmp_path}/Training/Apple"]


def test_a_split_of_unlabelled_photos_beside_a_labelled_one_has_no_class(tmp_path):
    """A competition's layout: `train/<class>/` and `test/` holding the photos to label."""
    _write_tree(tmp_path, ["train/Apple/1.jpg", "train/Banana/2.jpg", "test/1001.jpg", "test/1002.jpg"])
    assert discover_layout(str(tmp_path)).classes_by_split == {"train": ["Apple", "Banana"]}


def test_splits_the_settings_name_keep_the_splits_beside_a_stray_file(tmp_path):
    _write_tree(tmp_path, ["Fit/Apple/1.jpg", "Fit/desktop.ini", "Check/Apple/2.jpg"])
    assert not discover_layout(str(tmp_path)).has_splits  # nothing says Fit and Check are splits
    named = discover_layout(str(tmp_path), split_names=("Fit", "", "check"))
    assert named.classes_by_split == {"Check": ["Apple"], "Fit": ["Apple"]}


def test_a_split_folder_with_spaces_around_its_name_is_still_a_split_beside_a_stray_file(tmp_path):
    _write_tree(tmp_path, ["Training /Apple/1.jpg", "Training /desktop.ini", "Test/Apple/2.jpg"])
    assert discover_layout(str(tmp_path)).classes_by_split == {"Test": ["Apple"], "Training ": ["Apple"]}


def test_flat_classes_named_like_splits_stay_classes(tmp_path):
    """A class folder holding photos and no folder is a class, whatever its name."""
    _write_tree(tmp_path, ["Apple/1.jpg", "Test/2.jpg", "val/3.jpg"])
    assert discover_layout(str(tmp_path)).classes_by_split == {NO_SPLIT: ["Apple", "Test", "val"]}


def test_a_root_of_loose_images_names_both_layouts(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"jpeg")
    with pytest.raises(LayoutError, match=r"<root>/<split>/<class>/<image> or <root>/<class>/<image>"):
        discover_layout(str(tmp_path))


GROCERY_TREE = [
    "train/Fruit/Apple/Granny-Smith/1.jpg",
    "train/Fruit/Apple/Golden-Delicious/2.jpg",
    "train/Fruit/Banana/3.jpg",
    "train/Fruit/Banana/close-ups/4.jpg",
    "val/Fruit/Apple/Granny-Smith/5.jpg",
    "val/Vegetables/Potato/Floury/6.jpg",
]
"""A tree like the GroceryStoreDataset's: class folders at two depths below each split, a class with a sub-folder."""


def _write_tree(root, keys) -> None:
    for key in keys:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(b"jpeg")


def test_nested_class_folders_are_the_leaves_holding_photos(tmp_path):
    _write_tree(tmp_path, GROCERY_TREE)
    layout = discover_layout(str(tmp_path))
    assert layout.classes_by_split == {
        "train": ["Banana", "Golden-Delicious", "Granny-Smith"],
        "val": ["Floury", "Granny-Smith"],
    }
    assert layout.class_dirs(["Granny-Smith"]) == [
        f"{tmp_path}/train/Fruit/Apple/Granny-Smith",
        f"{tmp_path}/val/Fruit/Apple/Granny-Smith",
    ]
    assert layout.class_dirs(["Banana"]) == [f"{tmp_path}/train/Fruit/Banana"]  # close-ups/ is Banana's
    assert layout.depths == {2, 3}


@pytest.mark.parametrize(
    ("depth", "expected"),
    [
        (1, {"train": ["Fruit"], "val": ["Fruit", "Vegetables"]}),
        (2, {"train": ["Apple", "Banana"], "val": ["Apple", "Potato"]}),
    ],
)
def test_a_class_depth_names_the_folders_that_many_levels_down(tmp_path, depth, expected):
    _write_tree(tmp_path, GROCERY_TREE)
    layout = discover_layout(str(tmp_path), class_depth=depth)
    assert layout.classes_by_split == expected
    assert layout.depths == {depth}


def test_photos_above_the_class_depth_are_a_clear_error(tmp_path):
    _write_tree(tmp_path, GROCERY_TREE)
    with pytest.raises(
        LayoutError, match=r"photos in train/Fruit/Banana .* lie above the class folders \(class depth 3"
    ):
        discover_layout(str(tmp_path), class_depth=3)
    with pytest.raises(LayoutError, match="negative"):
        discover_layout(str(tmp_path), class_depth=-1)


def test_two_leaves_of_one_name_in_a_split_are_a_clear_error(tmp_path):
    _write_tree(tmp_path, ["train/Fruit/Apple/Red/1.jpg", "train/Vegetables/Pepper/Red/2.jpg"])
    with pytest.raises(
        LayoutError, match="two class folders are named 'Red'.*Fruit/Apple/Red and Vegetables/Pepper/Red"
    ):
        discover_layout(str(tmp_path))
    assert discover_layout(str(tmp_path), class_depth=2).classes == ["Apple", "Pepper"]


def test_a_nested_class_folder_linked_outside_the_root_is_refused(tmp_path):
    _write_tree(tmp_path, ["outside/secret.jpg", "images/train/Fruit/Kiwi/1.jpg"])
    (tmp_path / "images" / "train" / "Fruit" / "Evil").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(LayoutError, match="train/Fruit/Evil .* leads outside the images root"):
        discover_layout(str(tmp_path / "images"))


def test_both_layouts_on_s3(aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="fruits-layouts", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    keys = [
        "flat/Kiwi/1.jpg",
        "flat/apple_red_2/2.jpg",
        "flat/.cache/x",
        "split/train/Kiwi/1.jpg",
        "split/test/Fig/2.jpg",
    ]
    for key in keys:
        s3.put_object(Bucket="fruits-layouts", Key=key, Body=b"jpeg")
    flat = discover_layout("s3://fruits-layouts/flat")
    assert flat.classes_by_split == {NO_SPLIT: ["Kiwi", "apple_red_2"]}
    assert flat.class_dirs(["Kiwi"]) == ["s3://fruits-layouts/flat/Kiwi"]
    split = discover_layout("s3://fruits-layouts/split")
    assert split.classes_by_split == {"test": ["Fig"], "train": ["Kiwi"]}
    for key in GROCERY_TREE:
        s3.put_object(Bucket="fruits-layouts", Key=f"nested/{key}", Body=b"jpeg")
    nested = discover_layout("s3://fruits-layouts/nested")
    assert nested.classes_by_split == {
        "train": ["Banana", "Golden-Delicious", "Granny-Smith"],
        "val": ["Floury", "Granny-Smith"],
    }
    assert nested.class_dirs(["Banana"]) == ["s3://fruits-layouts/nested/train/Fruit/Banana"]
    by_fruit = discover_layout("s3://fruits-layouts/nested", class_depth=2)
    assert by_fruit.classes_by_split == {"train": ["Apple", "Banana"], "val": ["Apple", "Potato"]}


def test_on_s3_a_split_with_a_stray_file_keeps_every_class_past_a_listing_page(aws):
    """A folder holding a file was listed up to its first page holding one: the classes on the next pages of a split
    with a stray file are listed too. S3 lists 1,000 keys a page; this client asks for 5."""
    s3 = boto3.client("s3")
    s3.meta.events.register(
        "before-parameter-build.s3.ListObjectsV2", lambda params, **_: params.setdefault("MaxKeys", 5)
    )
    s3.create_bucket(Bucket="fruits-pages", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    classes = [f"c{i:02d}" for i in range(12)]
    for key in ["Training/Thumbs.db", *(f"Training/{name}/1.jpg" for name in classes), "Test/c00/2.jpg"]:
        s3.put_object(Bucket="fruits-pages", Key=key, Body=b"jpeg")
    layout = discover_layout("s3://fruits-pages", s3)
    assert layout.classes_by_split == {"Test": ["c00"], "Training": classes}


def test_empty_files_on_s3_are_listed_with_the_client_given(aws, monkeypatch):
    s3 = boto3.client("s3", endpoint_url=aws)
    s3.create_bucket(Bucket="fruits-empty", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    # Kiwi/folder/: the marker the S3 console's "Create folder" writes, no photo
    objects = {
        "Kiwi/a.jpg": b"jpeg",
        "Kiwi/empty.jpg": b"",
        "Kiwi/deep/none.png": b"",
        "Kiwi/.x": b"",
        "Kiwi/folder/": b"",
    }
    for key, body in objects.items():
        s3.put_object(Bucket="fruits-empty", Key=key, Body=body)
    # The environment's default endpoint now leads nowhere: only the given client reaches the objects.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert empty_files("s3://fruits-empty/Kiwi", s3) == ["deep/none.png", "empty.jpg"]


def test_a_source_of_its_own_adds_its_folders_of_known_classes_as_a_split(tmp_path):
    _write_tree(tmp_path / "images", ["Training/Kiwi/1.jpg", "Training/Fig/2.jpg", "Test/Kiwi/3.jpg"])
    _write_tree(tmp_path / "feedback", ["Kiwi/a.jpg", "Durian/b.jpg", "_records/a.json"])
    layout = discover_layout(str(tmp_path / "images"))
    added = with_source(layout, "_feedback", str(tmp_path / "feedback"))
    assert added.classes_by_split["_feedback"] == ["Kiwi"]  # Durian is no class of the images
    assert added.splits == ["Test", "Training"] and added.classes == ["Fig", "Kiwi"]
    assert added.class_folders(["Kiwi"]) == [
        ("Test", "Test/Kiwi", f"{tmp_path}/images/Test/Kiwi"),
        ("Training", "Training/Kiwi", f"{tmp_path}/images/Training/Kiwi"),
        ("_feedback", "_feedback/Kiwi", f"{tmp_path}/feedback/Kiwi"),
    ]
    assert with_source(layout, "_feedback", str(tmp_path / "not yet")) == layout


def test_a_photo_linking_to_nothing_is_a_clear_error_naming_it(tmp_path):
    from spark_code.photos.listing import class_versions

    _write_tree(tmp_path, ["Training/Apple/1.jpg"])
    (tmp_path / "Training" / "Apple" / "2.jpg").symlink_to(tmp_path / "gone.jpg")
    layout = discover_layout(str(tmp_path))
    with pytest.raises(LayoutError, match=r"Apple/2.jpg is a link to a file that is not there"):
        class_versions(layout, ["Apple"])
    with pytest.raises(LayoutError, match=r"Apple/2.jpg is a link to a file that is not there"):
        empty_files(str(tmp_path / "Training" / "Apple"))
