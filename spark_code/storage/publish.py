"""Publishing by pointer, for the models (Spark ML's own folders, which no table format holds): a reader always finds
a complete version of each part of an output, on local disk and on S3, even when a writer is killed half-way. (The
table outputs are Delta Lake tables: spark_code.storage.class_tables.)

An output folder `<base>` holds:
- `_versions/<tag>/`: everything one writer wrote. Nothing points at it while it is being written, and nothing is
  ever renamed (S3 cannot rename a folder atomically: it copies object by object).
- `_current/<part>`: one small file per published part (a fruit class `label=<class>`, or `all` for a whole table
  or model) whose text is the part's location under `<base>`, e.g. `_versions/<tag>/label=Kiwi`.

A writer publishes a part by replacing its pointer file: atomic on local disk (a rename) and on S3 (an object
appears whole). Then it marks its version published (`_published`) and calls `recover`, which deletes what no
pointer names any more and no one can still need. Tags are `<id>.<pid>@<host>`. What no pointer names is deleted:

- Replaced, in a published version: only once it has been unreferenced for the grace period (`REPLACED_GRACE_SECONDS`,
  1 hour; `FRUITS_REPLACED_GRACE_SECONDS`), since a reader that followed the old pointer may still be reading it
  (Spark lists the files when a DataFrame is made and opens them when an action runs). Before replacing a pointer,
  `commit` writes `_versions/<old tag>/_replaced/<part>` whose text is the time (seconds since the epoch): a new
  small object on S3, which appears whole, so nothing is renamed or appended, and one marker per part, because parts
  of a version are replaced at different times. Written before the pointer moves, the marker exists as soon as the
  part is unreferenced; a writer killed between the two leaves a marker on a part still named, harmless (it is
  never deleted while named, and the next replacement rewrites the marker). A replaced part found without a marker
  (replaced by other code, or before this rule) is marked by the first `recover` that finds it, so it is kept a
  grace period from then. A whole version is judged by its newest marker.
- Never published: only once abandoned. A writer's version is abandoned when nothing under it was modified for
  `ABANDONED_AFTER_SECONDS` (24 hours; `FRUITS_ABANDONED_AFTER_SECONDS`): a running writer keeps adding files, and
  this works whatever host wrote it (on EMR the drivers run on other nodes, whose pids mean nothing here). Times are
  the files' modification times (the upload time on S3). As a fast path, a version whose tag names a process of this
  host that no longer runs is abandoned at once. The limit must exceed the longest time a writer goes without
  finishing a file. Its parts that a later writer replaced (a writer killed half-way through its commit) also wait
  for their grace period.

`recover` runs before each write and after each commit, so what waits is deleted by the first write to the same
output after its time has come. Limits are read from the environment at each call (`limits`); `recover` also takes
them, and the current time, as arguments (tests).
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid

from spark_code.storage import storage

VERSIONS = "_versions"
POINTERS = "_current"
PUBLISHED = "_published"
"""Marks a version whose writer has replaced all its pointers: what no pointer names in it was replaced since."""
WHOLE = "all"
"""The part name of an output published as one piece (a table or a model)."""
REPLACED = "_replaced"
"""`_versions/<tag>/_replaced/<part>`: when that part of the version was replaced (seconds since the epoch)."""
REPLACED_GRACE_SECONDS = 3600.0
"""How long a replaced part is kept for readers that followed the old pointer (`FRUITS_REPLACED_GRACE_SECONDS`)."""
ABANDONED_AFTER_SECONDS = 24 * 3600.0
"""How long an unpublished version may go unmodified before it is deleted (`FRUITS_ABANDONED_AFTER_SECONDS`)."""

_OWNER = re.compile(r"\.(?P<pid>\d+)@(?P<host>[^@/]+)$")


def limits() -> tuple[float, float]:
    """The replaced parts' grace period and the age of an abandoned version, in seconds, from the environment."""
    found = []
    for name, default in (
        ("FRUITS_REPLACED_GRACE_SECONDS", REPLACED_GRACE_SECONDS),
        ("FRUITS_ABANDONED_AFTER_SECONDS", ABANDONED_AFTER_SECONDS),
    ):
        text = os.environ.get(name, "").strip()
        try:
            value = float(text) if text else default
        except ValueError:
            value = -1.0
        if not value >= 0:  # also refuses nan
            raise ValueError(f"{name} must be a number of seconds >= 0, not {text!r}")
        found.append(value)
    return found[0], found[1]


def temp_tag() -> str:
    """A unique name for one writer's version, naming this process as its owner."""
    return f"{uuid.uuid4().hex}.{os.getpid()}@{socket.gethostname()}"


def pid_alive(pid: int) -> bool:
    """True while a process of this host with that id runs."""
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
    return bool(owner) and owner["host"] == socket.gethostname() and not pid_alive(int(owner["pid"]))


def _moment(seconds: float) -> str:
    """A marker's time, written exactly: rounded to the millisecond it could lie up to 0.5 ms in the future, so that
    a `recover` right after kept what a grace period of 0 must delete."""
    return f"{seconds!r}\n"


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
    pointer replacement each, after recording when the part it replaces was replaced; mark the version published;
    then delete what no pointer names and no one can still need (`recover`)."""
    base = base.rstrip("/")
    relative = version[len(base) + 1 :]
    replaced_at = _moment(time.time())
    existing = {f"{VERSIONS}/{tag}" for tag in storage.list_names(f"{base}/{VERSIONS}")}
    for part in parts:
        previous = version_of((storage.read_text(_pointer(base, part)) or "").strip())
        if previous in existing:  # not when the part is new, nor when its version was deleted by hand
            storage.write_text(f"{base}/{previous}/{REPLACED}/{part}", replaced_at)
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


def _replaced_at(base: str, location: str, now: float, record: bool) -> float | None:
    """When a leftover was replaced: its part's marker, or for a whole version its newest marker. None when there is
    none; then, with `record`, `now` is recorded for it and returned."""
    version = version_of(location)
    markers = f"{base}/{version}/{REPLACED}"
    name = location.rsplit("/", 1)[1] if location != version else None
    times = []
    for marker in [name] if name else storage.list_names(markers):
        try:
            times.append(float((storage.read_text(f"{markers}/{marker}") or "").strip()))
        except ValueError:
            continue
    if times:
        return max(times)
    if not record:
        return None
    storage.write_text(f"{markers}/{name or WHOLE}", _moment(now))
    return now


def _abandoned(base: str, version: str, now: float, abandoned_after: float) -> bool:
    """Whether an unpublished version's writer is gone: a dead process of this host, or nothing written for long."""
    if owner_is_dead(version.split("/")[1]):
        return True
    try:
        newest = storage.newest_mtime(f"{base}/{version}")
    except OSError:  # files vanished while listed: a writer is at work in it
        return False
    return newest is not None and now - newest >= abandoned_after


def recover(
    base: str, *, now: float | None = None, grace: float | None = None, abandoned_after: float | None = None
) -> list[str]:
    """Delete the leftovers that no one can still need: parts of published versions replaced at least `grace`
    seconds ago, and versions never published whose writer is gone (see the module's docstring). Never what a
    pointer names. `now` (seconds since the epoch), `grace` and `abandoned_after` default to the clock and `limits()`.
    Returns the deleted locations, relative to `base`."""
    base = base.rstrip("/")
    now = time.time() if now is None else now
    default_grace, default_abandoned_after = limits()
    grace = default_grace if grace is None else grace
    abandoned_after = default_abandoned_after if abandoned_after is None else abandoned_after
    published: dict[str, bool] = {}
    abandoned: dict[str, bool] = {}
    deleted = []
    for location in leftovers(base):
        version = version_of(location)
        if version not in published:
            published[version] = storage.exists(f"{base}/{version}/{PUBLISHED}")
        if not published[version]:
            if version not in abandoned:
                abandoned[version] = _abandoned(base, version, now, abandoned_after)
            if not abandoned[version]:
                continue
        replaced_at = _replaced_at(base, location, now, record=published[version])
        if replaced_at is not None and now - replaced_at < grace:
            continue
        storage.delete(f"{base}/{location}")
        if location != version:
            storage.delete(f"{base}/{version}/{REPLACED}/{location.rsplit('/', 1)[1]}")
        deleted.append(location)
    return deleted
