"""The driver's class archive: a session started with the project's settings maps Spark's classes from the archive
`make install` made, and an archive is only offered to the Java and the jars it was made with."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spark_code import jvm_class_archive
from spark_code.jvm_class_archive import archive_path, driver_java_options
from spark_code.jvm_packages import local_jars
from tests.conftest import REPO

SESSION = """
import sys
from pyspark.sql import SparkSession
from spark_code.settings import spark_conf

conf = spark_conf(master="local[1]")
conf["spark.driver.extraJavaOptions"] += f" -Xlog:class+load=info:file={sys.argv[1]}"
builder = SparkSession.builder.master("local[1]")
for key, value in conf.items():
    builder = builder.config(key, value)
session = builder.getOrCreate()
session.range(3).selectExpr("sum(id)").collect()
session.stop()
"""


def test_a_session_started_with_the_settings_loads_sparks_classes_from_the_archive(tmp_path):
    archive = archive_path(local_jars())
    assert archive is not None and archive.is_file(), f"no class archive at {archive}: run `make install`"
    log = tmp_path / "classes.log"
    env = {**os.environ, "SPARK_SUBMIT_OPTS": ""}
    done = subprocess.run(
        [sys.executable, "-c", SESSION, str(log)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = log.read_text().splitlines()
    spark = [line for line in lines if " org.apache.spark." in line]
    archived = sum("source: shared objects file (top)" in line for line in spark)
    from_jars = sum(" source: file:" in line or " source: jar:" in line for line in spark)
    assert archived > 1000 and archived > 0.9 * (archived + from_jars), (archived, from_jars)


def test_an_archive_is_named_for_its_java_and_each_jar_and_offered_only_where_it_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(jvm_class_archive, "archive_dir", lambda: tmp_path / "jars")
    jar = tmp_path / "a.jar"
    jar.write_bytes(b"one")
    made = jar.stat().st_mtime_ns
    first = archive_path([str(jar)])
    assert first is not None and first.parent == tmp_path / "jars" and driver_java_options([str(jar)]) == ""
    first.parent.mkdir()
    first.write_bytes(b"archive")
    assert driver_java_options([str(jar)]).startswith(f"-XX:SharedArchiveFile={first} ")

    jar.write_bytes(b"two!")  # another size: another fingerprint, for which there is no archive
    assert archive_path([str(jar)]) != first and driver_java_options([str(jar)]) == ""
    jar.write_bytes(b"one")
    assert archive_path([str(jar)]) != first  # the same size, but written again
    os.utime(jar, ns=(made, made))
    assert archive_path([str(jar)]) == first
    assert archive_path([str(jar), str(tmp_path / "b.jar")]) != first

    monkeypatch.setattr(jvm_class_archive, "_java", lambda: None)  # no Java found: no archive, nothing offered
    assert archive_path([str(jar)]) is None and driver_java_options([str(jar)]) == ""


@pytest.mark.parametrize("java_home", ["/nonexistent/java-home"])
def test_the_java_is_java_homes_when_it_is_set(monkeypatch, java_home):
    monkeypatch.setenv("JAVA_HOME", java_home)
    assert jvm_class_archive._java() is None
    monkeypatch.delenv("JAVA_HOME")
    found = jvm_class_archive._java()
    assert found is not None and found.name == "java" and found == Path(found).resolve()
