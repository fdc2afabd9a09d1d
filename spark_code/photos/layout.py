"""The images layouts, `<root>/<split>/<class>/<image>` and `<root>/<class>/<image>`, classes nested in folders of
their own (`<root>/<split>/Fruit/Apple/Granny-Smith/<image>`) included: finding splits and classes, on local disk or
S3.

The layout is detected from the tree, without a flag: when the root's folders hold image files themselves they are
classes (the layout of Keras' `image_dataset_from_directory` and torchvision's `ImageFolder`); when they only hold
folders they are splits, whatever their names. A root folder that holds folders and is named as a split
(DEFAULT_SPLIT_NAMES, or a split the settings name) makes them splits even beside files: files lying in a split folder
itself (Windows' Thumbs.db or desktop.ini, a README, a labels file, a competition's unlabelled test photos) belong to
no class and are not read. Below a split, a class is the first folder on each branch that holds
image files itself (the leaf folder of a nested tree; its own sub-folders' images are its), or, with a class depth
N, the folder N levels down (every image below it is its: `Fruit/Apple/*/...` is the class Apple at depth 2).
Listing is plain Python (no Spark) so that a Dagster sensor can discover classes cheaply.
"""

from __future__ import annotations

import os
import unicodedata
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from spark_code.errors import PermanentError

DEFAULT_SPLIT_NAMES = {
    "train": ("training", "train"),
    "validate": ("validation", "val", "valid", "dev"),
    "evaluate": ("test", "testing", "eval", "evaluation"),
}
"""Split folder names (compared by split_key: any case, spaces around ignored) that take a role when the settings
name none, by role (the keys are spark_code.photos.splits' TRAIN, VALIDATE and EVALUATE)."""


def split_key(name: str) -> str:
    """A split folder's name as it is compared with split names: any case, in NFC, without the spaces around it (a
    folder named `Test ` is the Test split)."""
    return unicodedata.normalize("NFC", name).strip().casefold()


class LayoutError(PermanentError, ValueError):
    """The images root or a class name is not usable; the message says why, for a person to read."""


def is_remote(uri: str) -> bool:
    """True for object-store URIs (s3://, s3a://), false for local paths and file: URIs."""
    return urlparse(uri).scheme in {"s3", "s3a", "s3n"}


def local_path(uri: str) -> str:
    """A local path from a path or a file: URI."""
    return urlparse(uri).path if uri.startswith("file:") else uri


def join_uri(root: str, *parts: str) -> str:
    """Join path parts onto a local path or URI with '/'."""
    return "/".join([root.rstrip("/"), *parts])


def validate_class_name(name: str) -> str:
    """Refuse names that could escape the roots or that Spark would silently skip as hidden."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        raise LayoutError(f"invalid class name {name!r}: it must be a single folder name")
    if name[0] in "._":
        raise LayoutError(f"invalid class name {name!r}: names starting with '.' or '_' are hidden files to Spark")
    return name


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _list_local(path: str) -> tuple[list[str], bool]:
    with os.scandir(path) as entries:
        entries = [e for e in entries if not _hidden(e.name)]
        return sorted(e.name for e in entries if e.is_dir()), any(e.is_file() for e in entries)


def _list_s3(uri: str, s3: Any = None, enough_with_a_file: bool = False) -> tuple[list[str], bool]:
    import boto3

    parsed = urlparse(uri)
    prefix = parsed.path.lstrip("/")
    prefix = f"{prefix.rstrip('/')}/" if prefix else ""
    paginator = (s3 or boto3.client("s3")).get_paginator("list_objects_v2")
    names: list[str] = []
    has_files = False
    for page in paginator.paginate(Bucket=parsed.netloc, Prefix=prefix, Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            name = common["Prefix"][len(prefix) :].rstrip("/")
            if name and not _hidden(name):
                names.append(name)
        has_files = has_files or any(
            not _hidden(item["Key"][len(prefix) :]) for item in page.get("Contents", []) if item["Key"] != prefix
        )
        if has_files and enough_with_a_file:
            break
    return sorted(names), has_files


def list_folder(uri: str, s3: Any = None, enough_with_a_file: bool = False) -> tuple[list[str], bool]:
    """The visible sub-folders of a local folder or S3 prefix (listed with `s3`, a boto3 client, if given), sorted,
    and whether it directly holds any visible file. `enough_with_a_file`: a caller that only needs the folders of a
    folder without files lets an S3 listing stop at its first page holding a file (a class of 10,000 photos is 10
    pages)."""
    if is_remote(uri):
        return _list_s3(uri, s3, enough_with_a_file)
    path = local_path(uri)
    if not os.path.isdir(path):
        raise LayoutError(f"images root {uri!r} does not exist or is not a folder")
    return _list_local(path)


def file_stat(path: str) -> os.stat_result:
    """A listed file's size and times; a link to nothing (or a file deleted while listed) is a LayoutError that names
    it, not a bare FileNotFoundError for a file that `ls` shows."""
    try:
        return os.stat(path)
    except FileNotFoundError as exc:
        raise LayoutError(f"{path} is a link to a file that is not there, or was deleted while listed") from exc


def _empty_local_files(folder: str) -> list[str]:
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not _hidden(d)]
        for name in files:
            path = os.path.join(parent, name)
            if not _hidden(name) and file_stat(path).st_size == 0:
                found.append(os.path.relpath(path, folder).replace(os.sep, "/"))
    return sorted(found)


def _empty_s3_files(uri: str, s3: Any = None) -> list[str]:
    import boto3

    parsed = urlparse(uri)
    prefix = f"{parsed.path.lstrip('/').rstrip('/')}/"
    paginator = (s3 or boto3.client("s3")).get_paginator("list_objects_v2")
    found = []
    for page in paginator.paginate(Bucket=parsed.netloc, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix) :]
            folder_marker = relative.endswith("/")  # what the S3 console's "Create folder" writes: no photo
            if item["Size"] == 0 and relative and not folder_marker and not any(map(_hidden, relative.split("/"))):
                found.append(relative)
    return sorted(found)


def empty_files(folder: str, s3: Any = None) -> list[str]:
    """Zero-byte files under a local folder or S3 prefix (listed with `s3`, a boto3 client, if given, as list_folder
    does), as relative paths, hidden ones skipped as Spark does.

    Spark's file sources silently skip empty files; listing them lets the pipeline reject them visibly.
    """
    return _empty_s3_files(folder, s3) if is_remote(folder) else _empty_local_files(local_path(folder))


NO_SPLIT = ""
"""The split of every image of a `<root>/<class>/<image>` layout (no split folders)."""


@dataclass(frozen=True)
class ImagesLayout:
    """Which class folders exist under which split folders of one images root; a layout without split folders has
    the one split NO_SPLIT."""

    root: str
    classes_by_split: dict[str, list[str]]
    folders: dict[str, dict[str, str]] = field(default_factory=dict)
    """split -> class -> the class's folder under the split (`Fruit/Apple/Granny-Smith`), where it is not the
    class's own name."""
    roots: dict[str, str] = field(default_factory=dict)
    """split -> a root of its own, `<root>/<class>/<image>`, for a source of photos beside the images root (the
    feedback area: see with_source)."""

    def folder(self, split: str, name: str) -> str:
        """The class's folder under the split, relative to it."""
        return self.folders.get(split, {}).get(name, name)

    @property
    def depths(self) -> set[int]:
        """How many folders below its split each class folder lies (1 for `<split>/<class>`)."""
        return {
            self.folder(split, name).count("/") + 1
            for split, names in self.classes_by_split.items()
            if split not in self.roots
            for name in names
        }

    @property
    def has_splits(self) -> bool:
        """False for `<root>/<class>/<image>`."""
        return NO_SPLIT not in self.classes_by_split

    @property
    def splits(self) -> list[str]:
        """The split folders' names, sorted ([NO_SPLIT] without split folders); the sources of other roots are not
        among them (they take no role by name)."""
        return sorted(split for split in self.classes_by_split if split not in self.roots)

    @property
    def classes(self) -> list[str]:
        """Every class found in any split, sorted."""
        return sorted({c for names in self.classes_by_split.values() for c in names})

    def class_dirs(self, classes: list[str]) -> list[str]:
        """The folders holding the given classes' images, across all splits and sources; unknown classes are an
        error."""
        return [uri for _, _, uri in self.class_folders(classes)]

    def class_folders(self, classes: list[str]) -> list[tuple[str, str, str]]:
        """(split, where, folder URI) of the given classes' folders across all splits and sources, `where` naming the
        folder whatever root it lies under (`Training/Kiwi`, `_feedback/Kiwi`); unknown classes are an error."""
        unknown = sorted(set(classes) - set(self.classes))
        if unknown:
            raise LayoutError(
                f"unknown class(es) {', '.join(map(repr, unknown))} under images root {self.root!r}; "
                f"{len(self.classes)} classes exist there"
            )
        found = []
        for split, names in sorted(self.classes_by_split.items()):
            for name in (name for name in classes if name in names):
                if split in self.roots:
                    found.append((split, f"{split}/{name}", join_uri(self.roots[split], name)))
                else:
                    where = "/".join(part for part in (split, self.folder(split, name)) if part)
                    found.append((split, where, join_uri(self.root, where)))
        return found


def _check_inside_root(root: str, split: str, folder: str) -> None:
    """A local split or class folder that is a link to somewhere outside the root would be read from there."""
    base = os.path.realpath(local_path(root))
    real = os.path.realpath(os.path.join(local_path(root), split, folder))
    if os.path.commonpath([base, real]) != base:
        shown = f"{split}/{folder}" if split else folder
        raise LayoutError(f"class folder {shown} under {root!r} leads outside the images root (to {real})")


def _class_folders(
    root: str, split: str, top: list[str], class_depth: int, s3: Any, listed: dict[str, tuple[list[str], bool]]
) -> dict[str, str]:
    """class -> its folder under the split (see the module's docstring), from the split's folders `top` (`listed`:
    those already listed); two class folders of one name in a split (in NFC), or photos lying above the class depth,
    are errors that say where."""
    found: dict[str, str] = {}
    todo = deque((name, 1) for name in top)
    while todo:
        folder, level = todo.popleft()
        if level != class_depth:
            uri = join_uri(root, *[part for part in (split, folder) if part])
            subfolders, has_files = listed.get(folder) or list_folder(uri, s3, enough_with_a_file=not class_depth)
            if class_depth and has_files:
                shown = f"{split}/{folder}" if split else folder
                raise LayoutError(
                    f"photos in {shown} under {root!r} lie above the class folders (class depth {class_depth}): "
                    "move them into a class folder or set another class depth"
                )
            if subfolders and (class_depth or not has_files):
                todo.extend((f"{folder}/{name}", level + 1) for name in subfolders)
                continue
            if class_depth:
                continue  # a branch that ends above the class depth holds no photo
        # One class whatever the Unicode form its folder's name was written in (macOS writes `Café` decomposed, NFD;
        # most other systems composed, NFC): the class is named in NFC, its folder kept as written.
        name = validate_class_name(unicodedata.normalize("NFC", folder.rsplit("/", 1)[-1]))
        if name in found:
            raise LayoutError(
                f"two class folders are named {name!r} under {join_uri(root, split)!r}: {found[name]} and {folder}; "
                "set a class depth that names each class once"
            )
        found[name] = folder
    return found


def _split_keys(split_names: Iterable[str]) -> set[str]:
    """The split_key of every split name: the default ones and `split_names` (the settings')."""
    return {*(n for names in DEFAULT_SPLIT_NAMES.values() for n in names), *(split_key(n) for n in split_names if n)}


def discover_layout(root: str, s3: Any = None, class_depth: int = 0, split_names: Iterable[str] = ()) -> ImagesLayout:
    """List the split and class folders of `root` (see the module's docstring; `class_depth` 0 takes each branch's
    first folder holding images; `split_names`: the splits the settings name, beside DEFAULT_SPLIT_NAMES); a missing
    root or one without any class is a clear error, and so is a class name or a linked folder that could make the
    pipeline read outside the root."""
    if not root:
        raise LayoutError("no images root is set: set FRUITS_IMAGES_ROOT or pass --images-root")
    if class_depth < 0:
        raise LayoutError(f"class depth {class_depth} is negative: 0 takes the leaf folders, N the folders N down")
    top, _ = list_folder(root, s3)
    listed = {name: list_folder(join_uri(root, name), s3, enough_with_a_file=True) for name in top}
    keys = _split_keys(split_names)
    splits_by_name = any(folders and split_key(name) in keys for name, (folders, _) in listed.items())
    if any(has_files for _, has_files in listed.values()) and not splits_by_name:
        under = {NO_SPLIT: top}
    else:
        # On S3 a split folder holding files was listed only up to the first page that holds one: in full here.
        complete = {
            split: list_folder(join_uri(root, split), s3)[0] if has_files and is_remote(root) else folders
            for split, (folders, has_files) in listed.items()
        }
        under = {split: folders for split, folders in complete.items() if folders}
    flat = listed if NO_SPLIT in under else {}
    by_split = {split: _class_folders(root, split, names, class_depth, s3, flat) for split, names in under.items()}
    by_split = {split: folders for split, folders in by_split.items() if folders}
    if not by_split:
        raise LayoutError(
            f"images root {root!r} holds no class folders: expected <root>/<split>/<class>/<image> "
            "or <root>/<class>/<image>"
        )
    for split, folders in by_split.items():
        for folder in folders.values():
            if not is_remote(root):
                _check_inside_root(root, split, folder)
    return ImagesLayout(
        root=root,
        classes_by_split={split: sorted(folders) for split, folders in by_split.items()},
        folders={
            split: nested
            for split, folders in by_split.items()
            if (nested := {name: folder for name, folder in folders.items() if folder != name})
        },
    )


def with_source(layout: ImagesLayout, split: str, root: str, s3: Any = None) -> ImagesLayout:
    """The layout and, as split `split`, the `<root>/<class>/<image>` folders of another root for the classes the
    layout has (a class only that root has is left out: it is no class of the images); a root not there yet adds
    nothing."""
    try:
        names, _ = list_folder(root, s3)
    except LayoutError:
        return layout
    known = [name for name in names if name in set(layout.classes)]
    if not known:
        return layout
    if not is_remote(root):
        for name in known:
            _check_inside_root(root, "", name)
    return ImagesLayout(
        root=layout.root,
        classes_by_split={**layout.classes_by_split, split: known},
        folders=layout.folders,
        roots={**layout.roots, split: root},
    )
