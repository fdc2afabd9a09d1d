"""Spark's JVM packages that pyspark lacks, fetched once from Maven Central into a cache folder.

Delta Lake (the embedding store's table format) at EMR 7.10's version (3.3.0, for Spark 3.5 and Scala 2.12), and
Hadoop's S3A connector at pyspark 3.5.5's Hadoop version (3.3.4) with the AWS SDK it was built against, so that a
local session reads and writes `s3://` as EMR's own connector does on the cluster. A cluster on EMR has Delta already
(the `delta-defaults` classification in `emr_config/cluster.json`) and needs none of these files.

The files are local jars put on the JVMs' class path (`spark_code.settings.spark_conf`), not Maven coordinates in
`spark.jars.packages`: Spark would resolve those with Ivy at every JVM start (seconds each, and a network call). Each
file is checked against its SHA-256 here, so a truncated or tampered download is never used.
`python -m spark_code.jvm_packages` fetches them (`make install` does); a session that finds them missing fetches
them first.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

DELTA_VERSION = "3.3.0"
"""EMR 7.10's Delta Lake (3.3.0-amzn-2); the `delta-spark` Python package is pinned to the same version."""
JARS_DIR_ENV = "FRUITS_JARS_DIR"
"""Where the jars are kept (default `~/.cache/fruits/jars`): shared by every clone and kept between runs."""
MAVEN_ENV = "FRUITS_MAVEN_REPOSITORY"
"""A Maven repository to fetch from instead of Maven Central (a company mirror)."""
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"


class JvmPackagesError(RuntimeError):
    """The jars are missing and cannot be fetched: the message is one line that says where from and why."""


@dataclass(frozen=True)
class Jar:
    group: str
    artifact: str
    version: str
    sha256: str

    @property
    def file_name(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    def url(self, repository: str) -> str:
        return (
            f"{repository.rstrip('/')}/{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.file_name}"
        )


JARS = (
    Jar(
        "io.delta",
        "delta-spark_2.12",
        DELTA_VERSION,
        "c6e93686b24e067d9645aa5f04b06fdfa938f18336f713b7f138994f9890ec9e",
    ),
    Jar("io.delta", "delta-storage", DELTA_VERSION, "951ce7e89468d1657aaf27067a5b9163a4bcccae3dd7d23d711f50bcd3365bb5"),
    Jar("org.apache.hadoop", "hadoop-aws", "3.3.4", "53f9ae03c681a30a50aa17524bd9790ab596b28481858e54efd989a826ed3a4a"),
    Jar(
        "com.amazonaws",
        "aws-java-sdk-bundle",
        "1.12.262",
        "873fe7cf495126619997bec21c44de5d992544aea7e632fdc77adb1a0915bae5",
    ),
)


def jars_dir() -> Path:
    return Path(os.environ.get(JARS_DIR_ENV) or Path.home() / ".cache" / "fruits" / "jars")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(jar: Jar, target: Path, repository: str) -> None:
    """Download one jar beside its target and rename it into place once its SHA-256 matches: a killed download or a
    second process fetching at the same time never leaves a partial jar under the name."""
    url = jar.url(repository)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        if _sha256(partial) != jar.sha256:
            raise JvmPackagesError(f"{url} does not have the expected SHA-256 {jar.sha256}: not used")
        partial.replace(target)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise JvmPackagesError(
            f"cannot fetch Spark's JVM package {jar.file_name} from {url} ({reason}): run `make install` where "
            f"{repository} answers, or put the jar in {target.parent} ({JARS_DIR_ENV})"
        ) from None
    finally:
        partial.unlink(missing_ok=True)


def local_jars() -> list[str]:
    """The jars' paths, fetching those not there yet (a present file is trusted: it was checked when fetched)."""
    folder = jars_dir()
    repository = os.environ.get(MAVEN_ENV) or MAVEN_CENTRAL
    paths = []
    for jar in JARS:
        target = folder / jar.file_name
        if not target.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            _fetch(jar, target, repository)
        paths.append(str(target))
    return paths


def main() -> None:
    try:
        paths = local_jars()
    except JvmPackagesError as exc:
        sys.exit(f"error: {exc}")
    print(f"Spark's JVM packages: {len(paths)} jars in {jars_dir()}")


if __name__ == "__main__":
    main()
