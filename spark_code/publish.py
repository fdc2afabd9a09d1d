"""Publishing a folder atomically enough that a reader always finds a complete version, and recovering what a
writer killed half-way left behind.

A writer writes a staging folder, moves the published folder aside, moves the staging folder in, then deletes the
aside copy. Temporary folders are named `<prefix><run id>.<pid>@<host>` so a later writer on the same host can
tell the leftovers of a dead process from those of a writer still running.
"""

from __future__ import annotations

import os
import re
import socket
import uuid

from pyspark.sql import SparkSession

from spark_code import storage

STAGING = "_staging-"
ASIDE = "_previous-"
_OWNER = re.compile(r"\.(?P<pid>\d+)@(?P<host>[^@/]+)$")


def temp_tag() -> str:
    """A unique suffix naming this process as the owner of a temporary folder."""
    return f"{uuid.uuid4().hex}.{os.getpid()}@{socket.gethostname()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_is_dead(name: str) -> bool:
    """True when a temporary folder's name says it belongs to a process of this host that no longer runs."""
    owner = _OWNER.search(name)
    return bool(owner) and owner["host"] == socket.gethostname() and not _pid_alive(int(owner["pid"]))


def publish(spark: SparkSession, staged: str, target: str, aside: str) -> None:
    """Swap the fully written `staged` folder in at `target`; the previous target waits at `aside` meanwhile.

    Between the two moves the target is absent, but its complete previous version is at `aside`, where `current`
    finds it and `restore` puts it back if the process dies there.
    """
    if storage.exists(spark, target):
        storage.rename(spark, target, aside)
    storage.rename(spark, staged, target)
    storage.delete(spark, aside)


def current(spark: SparkSession, target: str, asides: list[str]) -> str | None:
    """Where the published version of `target` is: itself, else a previous version a writer moved aside."""
    if storage.exists(spark, target):
        return target
    return next((aside for aside in asides if storage.exists(spark, aside)), None)


def restore(spark: SparkSession, target: str, aside: str) -> bool:
    """Put a previous version moved aside back at `target` when the target is missing; delete it otherwise.

    Returns whether it was put back. Only a writer calls this, never a reader.
    """
    if not storage.exists(spark, aside):
        return False
    if storage.exists(spark, target):
        storage.delete(spark, aside)
        return False
    storage.rename(spark, aside, target)
    return True
