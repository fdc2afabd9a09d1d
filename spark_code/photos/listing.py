"""Each class's data version from a listing of its files, without reading them: what tells a changed class apart.

A class's version is a SHA-256 of the images root's location and of its visible files (in every split): each file's
path under the images root, its size, and its modification time on disk or its ETag on S3. A new, deleted, renamed,
rewritten or touched file changes it, and so does the same tree under another root; nothing else does. Listing is
plain Python (no Spark), cheap enough for a sensor tick over hundreds of classes.
Hidden files and folders (names starting with '.' or '_') are skipped, as Spark's readers skip them.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any
from urllib.parse import urlparse

from spark_code.photos.layout import ImagesLayout, file_stat, is_remote, local_path


def _hidden(relative: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def _local_entries(folder: str) -> list[tuple[str, int, str]]:
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        for name in files:
            if name.startswith((".", "_")):
                continue
            path = os.path.join(parent, name)
            info = file_stat(path)
            found.append((os.path.relpath(path, folder).replace(os.sep, "/"), info.st_size, str(info.st_mtime_ns)))
    return found


def _s3_entries(uri: str, s3: Any = None) -> list[tuple[str, int, str]]:
    import boto3

    parsed = urlparse(uri)
    prefix = f"{parsed.path.lstrip('/').rstrip('/')}/"
    paginator = (s3 or boto3.client("s3")).get_paginator("list_objects_v2")
    found = []
    for page in paginator.paginate(Bucket=parsed.netloc, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix) :]
            if relative and not relative.endswith("/") and not _hidden(relative):
                found.append((relative, int(item["Size"]), item["ETag"].strip('"')))
    return found


def folder_entries(folder: str, s3: Any = None) -> list[tuple[str, int, str]]:
    """(path relative to the folder, size, modification time in ns or ETag) of every visible file under it."""
    return _s3_entries(folder, s3) if is_remote(folder) else _local_entries(local_path(folder))


def class_versions(layout: ImagesLayout, classes: list[str], s3: Any = None) -> dict[str, str]:
    """The data version of each class (a hex SHA-256 of its files' listing, across all splits)."""
    versions = {}
    # Where the photos are is part of what they are: the outputs' rows name their paths, so a copy of the images
    # elsewhere (times kept by `cp -p` or `rsync -a`; ETags are the content's MD5 on S3) is other data. So is a
    # class's folder in another source (the feedback area), which only counts where the class has one.
    for name in classes:
        digest = hashlib.sha256(f"{_located(layout.root)}\n".encode())
        for split, where, folder in layout.class_folders([name]):
            if split in layout.roots:
                digest.update(f"{split} in {_located(layout.roots[split])}\n".encode())
            for relative, size, stamp in sorted(folder_entries(folder, s3)):
                digest.update(f"{where}/{relative}\0{size}\0{stamp}\n".encode())
        versions[name] = digest.hexdigest()
    return versions


def _located(root: str) -> str:
    root = root.rstrip("/")
    return root if is_remote(root) else os.path.realpath(local_path(root))
