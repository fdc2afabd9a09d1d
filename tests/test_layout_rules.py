"""The layout and its import rules (`docs/layout.md`), checked on every module's imports, function-level ones
included: command line -> main job, app, benchmarks, EMR operations -> Dagster code location (`fruits_assets/defs/`,
merged by `fruits_assets/definitions.py`) -> spark_code (grouped by what it holds)."""

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

WEB = ("fastapi", "starlette", "uvicorn")
DAGSTER = ("dagster", "dagster_aws", "dagster_pyspark", "dagster_webserver")
ROOMS = ("fruits_assets.cli", "fruits_assets.app", "fruits_assets.bench", "fruits_assets.emr", "fruits_assets.main_job")
CODE_LOCATION = ("fruits_assets.defs", "fruits_assets.definitions")
SPARK_CODE_GROUPS = ("spark_code.photos", "spark_code.features", "spark_code.models", "spark_code.storage")
SPARK_CODE_ROOT = (
    "spark_code.settings",
    "spark_code.errors",
    "spark_code.progress",
    "spark_code.jvm_packages",
    "spark_code.jvm_class_archive",
)
"""What every group of spark_code uses, kept at its root; every other module belongs to a group."""
BEFORE_DAGSTER = ("fruits_assets.defs", "fruits_assets.defs.local_spark", "fruits_assets.defs.prod_env")
"""Modules of the code location that `fruits run` and `fruits emr` import without loading Dagster."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


PATHS = {
    _module_name(path): path for package in ("fruits_assets", "spark_code") for path in (REPO / package).rglob("*.py")
}
MODULES = {name: _imports(path.read_text(encoding="utf-8")) for name, path in PATHS.items()}


def _within(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _violations(
    modules: list[str], forbidden: tuple[str, ...], allowed: tuple[str, ...] = (), imports: dict | None = None
) -> dict[str, list[str]]:
    imports = MODULES if imports is None else imports
    found = {}
    for module in modules:
        bad = sorted(
            name for name in imports[module] if _within(name, *forbidden) and not _within(name, *allowed, module)
        )
        if bad:
            found[module] = bad
    return found


def _in(*prefixes: str) -> list[str]:
    return [module for module in MODULES if _within(module, *prefixes)]


def _reached(module: str, imports: dict | None = None) -> set[str]:
    """Everything importing `module` imports, through the project's own modules (and the packages above them)."""
    imports = MODULES if imports is None else imports
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for known in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
            if known in imports and known not in seen:
                seen.add(known)
                todo.extend(imports[known])
    return set().union(*(imports[name] for name in seen)) | seen


def _outside_the_rooms(modules: list[str]) -> list[str]:
    """fruits_assets modules in no room and not in the code location's own: a module of the code location left
    beside the rooms instead of under defs/."""
    return sorted(
        m
        for m in modules
        if _within(m, "fruits_assets") and m != "fruits_assets" and not _within(m, *ROOMS, *CODE_LOCATION)
    )


def _flat_spark_code(paths: dict[str, Path]) -> list[str]:
    """spark_code modules lying at its root that are not among SPARK_CODE_ROOT (packages do not count)."""
    root = REPO / "spark_code"
    return sorted(
        name
        for name, path in paths.items()
        if path.parent == root and path.name != "__init__.py" and name not in SPARK_CODE_ROOT
    )


def _not_merging(source: str) -> list[str]:
    """What a definitions module does besides merging the code location: functions or classes of its own, imports
    of the project's modules from outside defs/."""
    tree = ast.parse(source)
    defined = [
        f"defines {node.name}"
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    ]
    foreign = [
        f"imports {name}"
        for name in sorted(_imports(source))
        if _within(name, "fruits_assets", "spark_code") and not _within(name, "fruits_assets.defs")
    ]
    return defined + foreign


def test_the_rooms_exist():
    assert {"fruits_assets.cli.main", "fruits_assets.app.predictor", "fruits_assets.bench.standalone_cluster"} <= set(
        MODULES
    )
    assert {"fruits_assets.emr.cluster", "fruits_assets.main_job", "fruits_assets.definitions"} <= set(MODULES)
    assert {"fruits_assets.defs.assets.ingestion", "fruits_assets.defs.emr_resources"} <= set(MODULES)
    assert set(SPARK_CODE_GROUPS) | set(SPARK_CODE_ROOT) <= set(MODULES)


def test_every_module_of_the_code_location_lives_under_defs():
    assert _outside_the_rooms(list(MODULES)) == []


def test_definitions_only_merges_the_code_location():
    assert _not_merging(PATHS["fruits_assets.definitions"].read_text(encoding="utf-8")) == []


def test_spark_code_has_no_flat_modules_but_what_every_group_uses():
    assert _flat_spark_code(PATHS) == []
    for group in SPARK_CODE_GROUPS:
        assert len(_in(group)) > 1, f"{group} holds no module"


def test_the_rules_catch_what_they_forbid():
    """Each rule above fails on a layout that breaks it."""
    assert _outside_the_rooms(["fruits_assets.defs.sensors", "fruits_assets.freshness", "fruits_assets.cli.run"]) == [
        "fruits_assets.freshness"
    ]
    assert _not_merging("from fruits_assets.emr import cluster\ndef resources_for(): ...\n") == [
        "defines resources_for",
        "imports fruits_assets.emr",
        "imports fruits_assets.emr.cluster",
    ]
    assert _flat_spark_code({"spark_code.publish": REPO / "spark_code" / "publish.py"}) == ["spark_code.publish"]
    imports = {"fruits_assets.defs.x": {"fruits_assets.emr.cli"}, "fruits_assets.emr.cli": {"dagster"}}
    assert _violations(["fruits_assets.defs.x"], ROOMS, imports=imports) == {
        "fruits_assets.defs.x": ["fruits_assets.emr.cli"]
    }
    assert "dagster" in _reached("fruits_assets.defs.x", imports)


@pytest.mark.parametrize(
    ("modules", "forbidden", "allowed"),
    [
        (_in("spark_code"), ("fruits_assets", *DAGSTER, *WEB), ()),
        (_in(*SPARK_CODE_ROOT), SPARK_CODE_GROUPS, ()),
        (_in("fruits_assets.app"), ("fruits_assets", *DAGSTER), ("fruits_assets.app",)),
        (["fruits_assets", *_in(*CODE_LOCATION)], ROOMS, ()),
        (_in("fruits_assets.main_job"), tuple(r for r in ROOMS if r != "fruits_assets.main_job"), ()),
        (_in("fruits_assets.bench", "fruits_assets.emr", "fruits_assets.app"), ("fruits_assets.cli",), ()),
        (["fruits_assets.emr.cluster"], ("fruits_assets.emr.cli",), ()),
    ],
    ids=[
        "spark_code",
        "spark_code root",
        "app",
        "dagster code location",
        "main job",
        "rooms below the command line",
        "emr",
    ],
)
def test_imports_flow_one_way(modules, forbidden, allowed):
    assert modules
    assert _violations(modules, forbidden, allowed) == {}


@pytest.mark.parametrize("module", BEFORE_DAGSTER)
def test_what_the_command_line_imports_before_dagster_reaches_no_dagster(module):
    assert module in MODULES
    assert sorted(name for name in _reached(module) if _within(name, *DAGSTER, *WEB)) == []
