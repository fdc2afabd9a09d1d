"""The lean install: `make run` installs the package alone, so nothing but the benches' Ray pattern may need the
test and bench extras (Ray, Playwright, moto, schemathesis, pytest)."""

import subprocess
import sys

import tomllib
from packaging.requirements import Requirement

from tests.conftest import REPO

EXTRAS_ONLY = ("ray", "playwright", "moto", "schemathesis", "pytest", "ruff")
NEEDS_BENCH_EXTRA = {"fruits_assets.bench.ray_data"}  # `fruits bench featurize --no-ray` runs without it

# Imports every module of the platform with the extras' packages made unimportable, as in a base install.
_IMPORT_ALL = """
import importlib, importlib.abc, pkgutil, sys
BLOCKED, SKIP = {blocked!r}, {skip!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not in the base install")
sys.meta_path.insert(0, Block())
import fruits_assets, spark_code
for package in (fruits_assets, spark_code):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name not in SKIP and not info.name.endswith(".__main__"):
            importlib.import_module(info.name)
importlib.import_module("fruits_assets.cli.main")._parser().parse_args(["run", "--help"])
"""


def test_the_base_dependencies_hold_no_test_or_bench_tool():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {Requirement(dep).name for dep in project["dependencies"]}
    assert not names & set(EXTRAS_ONLY)
    extras = {Requirement(dep).name for deps in project["optional-dependencies"].values() for dep in deps}
    assert {"ray", "playwright", "moto"} <= extras


def test_every_module_imports_without_the_extras():
    code = _IMPORT_ALL.format(blocked=EXTRAS_ONLY, skip=NEEDS_BENCH_EXTRA)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    # `--help` exits 0 through SystemExit after printing the options: every import above succeeded first.
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--images-root" in done.stdout


def test_make_run_installs_the_package_without_extras():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    run_target = next(line for line in makefile.splitlines() if line.startswith("run:"))
    assert run_target.split(":", 1)[1].split() == ["$(STAMP)"]
    base_install = makefile.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "-e ." in base_install and "[dev" not in base_install and "bench]" not in base_install
