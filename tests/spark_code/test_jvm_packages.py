"""Fetching Spark's JVM packages: from a Maven repository served here, a corrupt download refused, no network in one
line (the real jars are those a session of the suite already fetched into the cache folder)."""

import functools
import http.server
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from spark_code import jvm_packages
from spark_code.jvm_packages import JARS, JvmPackagesError, local_jars

DELTA_STORAGE = next(jar for jar in JARS if jar.artifact == "delta-storage")


@pytest.fixture
def repository(tmp_path):
    """A Maven repository layout on a loopback HTTP server, holding delta-storage as Maven Central has it, and the
    same path with one byte changed under a second root."""
    real = Path(local_jars()[JARS.index(DELTA_STORAGE)]).read_bytes()
    for root, data in (("good", real), ("corrupt", real[:-1] + bytes([real[-1] ^ 1]))):
        target = tmp_path / "served" / DELTA_STORAGE.url(root)
        target.parent.mkdir(parents=True)
        target.write_bytes(data)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "served"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", real
    server.shutdown()


def test_a_jar_is_fetched_checked_and_a_corrupt_one_is_never_used(repository, tmp_path):
    url, real = repository
    target = tmp_path / "jars" / DELTA_STORAGE.file_name
    target.parent.mkdir()
    jvm_packages._fetch(DELTA_STORAGE, target, f"{url}/good")
    assert target.read_bytes() == real
    target.unlink()
    with pytest.raises(JvmPackagesError, match="expected SHA-256"):
        jvm_packages._fetch(DELTA_STORAGE, target, f"{url}/corrupt")
    assert list(target.parent.iterdir()) == []  # neither the jar nor a partial download


def test_no_network_is_one_line_naming_the_repository_and_what_to_do(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = {"FRUITS_JARS_DIR": str(tmp_path / "jars"), "FRUITS_MAVEN_REPOSITORY": closed, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "spark_code.jvm_packages"], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: cannot fetch Spark's JVM package")
    assert closed in done.stderr and "make install" in done.stderr
    assert not any((tmp_path / "jars").iterdir())
