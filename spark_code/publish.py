"""Publishing by pointer: a reader always finds a complete version of each part of an output, on local disk and
on S3, even when a writer is killed half-way.

An output folder `<base>` holds:
- `_versions/<tag>/`: everything one writer wrote. Nothing points at it while it is being written, and nothing is
  ever renamed (S3 cannot rename a folder atomically: it copies object by object).
- `_current/<part>`: one small file per published part (a fruit class `label=<class>`, or `all` for a whole table
  or model) whose text is the part's location under `<base>`, e.g. `_versions/<tag>/label=Kiwi`.

A writer publishes a part by replacing its pointer file: atomic on local disk (a rename) and on S3 (an object
appears whole). Then it marks its version published and deletes what no pointer names any more. Tags are
`<id>.<pid>@<host>`, so a later writer on the same host can tell the unpublished version of a dead writer from
that of one still running, and deletes it.
"""

from __future__ import annotations

import os
import re
import socket
import uuid

from spark_code import storage

VERSIONS = "_versions"
POINTERS = "_current"
PUBLISHED = "_published"
"""Marks a version whose writer has replaced all its pointers: what no pointer names in it is then garbage."""
WHOLE = "all"
"""The part name of an output published as one piece (a table or a model)."""

_OWNER = re.compile(r"\.(?P<pid>\d+)@(?P<host>[^@/]+)$")


def temp_tag() -> str:
    """A unique name for one writer's version, naming this process as its owner."""
    return f"{uuid.uuid4().hex}.{os.getpid()}@{socket.gethostname()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_is_dead(tag: str) -> bool:
    """True when a version's tag says it belongs to a process of this host that no longer runs."""
    owner = _OWNER.search(tag)
    return bool(owner) and owner["host"] == socket.gethostname() and not _pid_alive(int(owner["pid"]))


def new_version(base: str) -> str:
    """A fresh folder for one writer's output, `<base>/_versions/<tag>`; readers ignore it until `commit`."""
    return f"{base.rstrip('/')}/{VERSIONS}/{temp_tag()}"


def _pointer(base: str, part: str) -> str:
    return f"{base.rstrip('/')}/{POINTERS}/{part}"


def current(base: str, part: str = WHOLE) -> str | None:
    """The folder holding the published version of a part, or None when it was never published."""
    location = storage.read_text(_pointer(base, part))
    return f"{base.rstrip('/')}/{location.strip()}" if location else None


def pointers(base: str) -> dict[str, str]:
    """Every published part of `base` and its location relative to `base`."""
    base = base.rstrip("/")
    found = {}
    for part in storage.list_names(f"{base}/{POINTERS}"):
        location = None if part.startswith(".") else storage.read_text(_pointer(base, part))
        if location:
            found[part] = location.strip()
    return found


def version_of(location: str) -> str:
    """The version folder, `_versions/<tag>`, of a location such as `_versions/<tag>/label=Kiwi`."""
    return "/".join(location.split("/")[:2])


def commit(base: str, version: str, parts: list[str]) -> None:
    """Publish `parts` of a fully written `version` (the part WHOLE publishes the version itself), one atomic
    pointer replacement each; mark the version published; then delete what no pointer names any more."""
    base = base.rstrip("/")
    relative = version[len(base) + 1 :]
    for part in parts:
        storage.write_text(_pointer(base, part), relative if part == WHOLE else f"{relative}/{part}")
    storage.write_text(f"{version}/{PUBLISHED}", "")
    recover(base)


def discard(version: str) -> None:
    """Delete a version that will not be published (its writer failed)."""
    storage.delete(version)


def leftovers(base: str) -> list[str]:
    """What no pointer names under `base` (relative locations): whole versions, and parts of versions that a
    later writer replaced. A running writer's version is among them until it commits."""
    base = base.rstrip("/")
    locations = set(pointers(base).values())
    found = []
    for tag in storage.list_names(f"{base}/{VERSIONS}"):
        version = f"{VERSIONS}/{tag}"
        if version in locations:
            continue
        kept = {location for location in locations if location.startswith(f"{version}/")}
        if not kept:
            found.append(version)
            continue
        parts = (f"{version}/{entry}" for entry in storage.list_names(f"{base}/{version}"))
        found.extend(part for part in parts if part not in kept and not part.rsplit("/", 1)[1].startswith(("_", ".")))
    return found


def recover(base: str) -> list[str]:
    """Delete the leftovers that no writer can still need: those of published versions (replaced since) and those
    of writers that died. Returns their locations relative to `base`."""
    base = base.rstrip("/")
    deleted = []
    for location in leftovers(base):
        version = version_of(location)
        if storage.exists(f"{base}/{version}/{PUBLISHED}") or owner_is_dead(version.split("/")[1]):
            storage.delete(f"{base}/{location}")
            deleted.append(location)
    return deleted
