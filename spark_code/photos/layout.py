"""The images layouts, `<root>/<split>/<class>/<image>` and `<root>/<class>/<image>`: finding splits and classes,
on local disk or S3.

The layout is detected from the tree, without a flag: when the root's folders hold image files themselves they are
classes (the layout of Keras' `image_dataset_from_directory` and torchvision's `ImageFolder`); when they only hold
folders they are splits, whatever their names. Listing is plain Python (no Spark) so that a Dagster sensor can
discover classes cheaply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from spark_code.errors import PermanentError


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


def _list_s3(uri: str, s3: Any = None) -> tuple[list[str], bool]:
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
    return sorted(names), has_files


def list_folder(uri: str, s3: Any = None) -> tuple[list[str], bool]:
    """The visible sub-folders of a local folder or S3 prefix (listed with `s3`, a boto3 client, if given), sorted,
    and whether it directly holds any visible file."""
    if is_remote(uri):
        return _list_s3(uri, s3)
    path = local_path(uri)
    if not os.path.isdir(path):
        raise LayoutError(f"images root {uri!r} does not exist or is not a folder")
    return _list_local(path)


def _empty_local_files(folder: str) -> list[str]:
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not _hidden(d)]
        for name in files:
            path = os.path.join(parent, name)
            if not _hidden(name) and os.path.getsize(path) == 0:
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
            if item["Size"] == 0 and relative and not any(_hidden(part) for part in relative.split("/")):
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

    @property
    def has_splits(self) -> bool:
        """False for `<root>/<class>/<image>`."""
        return NO_SPLIT not in self.classes_by_split

    @property
    def splits(self) -> list[str]:
        """The split folders' names, sorted ([NO_SPLIT] without split folders)."""
        return sorted(self.classes_by_split)

    @property
    def classes(self) -> list[str]:
        """Every class found in any split, sorted."""
        return sorted({c for names in self.classes_by_split.values() for c in names})

    def class_dirs(self, classes: list[str]) -> list[str]:
        """The folders holding the given classes' images, across all splits; unknown classes are an error."""
        unknown = sorted(set(classes) - set(self.classes))
        if unknown:
            raise LayoutError(
                f"unknown class(es) {', '.join(map(repr, unknown))} under images root {self.root!r}; "
                f"{len(self.classes)} classes exist there"
            )
        return [
            join_uri(self.root, *[part for part in (split, name) if part])
            for split, names in sorted(self.classes_by_split.items())
            for name in classes
            if name in names
        ]


def _check_inside_root(root: str, split: str, name: str) -> None:
    """A local split or class folder that is a link to somewhere outside the root would be read from there."""
    base = os.path.realpath(local_path(root))
    real = os.path.realpath(os.path.join(local_path(root), split, name))
    if os.path.commonpath([base, real]) != base:
        shown = f"{split}/{name}" if split else name
        raise LayoutError(f"class folder {shown} under {root!r} leads outside the images root (to {real})")


def discover_layout(root: str, s3: Any = None) -> ImagesLayout:
    """List `<root>/<split>/<class>` or `<root>/<class>` folders (see the module's docstring); a missing root or one
    without any class is a clear error, and so is a class name or a linked folder that could make the pipeline read
    outside the root."""
    if not root:
        raise LayoutError("no images root is set: set FRUITS_IMAGES_ROOT or pass --images-root")
    top, _ = list_folder(root, s3)
    listed = {name: list_folder(join_uri(root, name), s3) for name in top}
    if any(has_files for _, has_files in listed.values()):
        by_split = {NO_SPLIT: top}
    else:
        by_split = {split: folders for split, (folders, _) in listed.items() if folders}
    if not by_split:
        raise LayoutError(
            f"images root {root!r} holds no class folders: expected <root>/<split>/<class>/<image> "
            "or <root>/<class>/<image>"
        )
    for split, names in by_split.items():
        for name in names:
            validate_class_name(name)
            if not is_remote(root):
                _check_inside_root(root, split, name)
    return ImagesLayout(root=root, classes_by_split=by_split)
