"""The cluster runs what the suite runs: every package the bootstrap pins on EMR's nodes
(`emr_config/requirements-emr.txt`) is pinned at the same version in `requirements.lock`, Spark included, so
`make test` exercises spark_code on the cluster's Spark and packages without an environment of its own."""

import json

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from spark_code.jvm_packages import DELTA_VERSION
from tests.conftest import REPO


def _pins(path) -> dict[str, str]:
    """name (normalized as pip does) -> version of each `name==version` line."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (pin,) = requirement.specifier  # exactly one `==version` each
            assert pin.operator == "==", line
            pins[canonicalize_name(requirement.name)] = pin.version
    return pins


def test_every_package_of_the_nodes_is_pinned_alike_in_the_lock():
    nodes, lock = _pins(REPO / "emr_config/requirements-emr.txt"), _pins(REPO / "requirements.lock")
    assert {"pyspark", "tensorflow-cpu", "numpy", "pyarrow"} <= set(nodes)
    assert {name: (version, lock.get(name)) for name, version in nodes.items() if lock.get(name) != version} == {}


def test_the_cluster_release_is_the_one_whose_spark_is_pinned():
    """EMR 7.10 runs Spark 3.5.5 (its release notes): the release label and the pin move together."""
    release = json.loads((REPO / "emr_config/cluster.json").read_text(encoding="utf-8"))["ReleaseLabel"]
    assert (release, _pins(REPO / "requirements.lock")["pyspark"]) == ("emr-7.10.0", "3.5.5")


def test_the_cluster_enables_its_delta_lake_at_the_version_the_suite_runs():
    """EMR 7.10 ships Delta Lake 3.3.0-amzn-2 (its release notes): the Python package the nodes install and the jars a
    local session fetches are 3.3.0, and the cluster turns its Delta on."""
    cluster = json.loads((REPO / "emr_config/cluster.json").read_text(encoding="utf-8"))
    enabled = {item["Classification"]: item.get("Properties") for item in cluster["Configurations"]}
    assert enabled["delta-defaults"] == {"delta.enabled": "true"}
    versions = {
        path: _pins(REPO / path)["delta-spark"] for path in ("emr_config/requirements-emr.txt", "requirements.lock")
    }
    assert set(versions.values()) == {DELTA_VERSION} == {"3.3.0"}
