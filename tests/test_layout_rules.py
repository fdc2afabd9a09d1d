"""The layout's import rules (README, "Layout"), checked on every module's imports, function-level ones included:
command line -> main job, app, benchmarks, EMR operations -> Dagster definitions and assets -> spark_code."""

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

WEB = ("fastapi", "starlette", "uvicorn")
DAGSTER = ("dagster", "dagster_aws", "dagster_pyspark", "dagster_webserver")
ROOMS = ("fruits_assets.cli", "fruits_assets.app", "fruits_assets.bench", "fruits_assets.emr", "fruits_assets.main_job")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


MODULES = {
    _module_name(path): _imports(path)
    for package in ("fruits_assets", "spark_code")
    for path in (REPO / package).rglob("*.py")
}


def _within(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _violations(modules: list[str], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> dict[str, list[str]]:
    found = {}
    for module in modules:
        bad = sorted(
            name for name in MODULES[module] if _within(name, *forbidden) and not _within(name, *allowed, module)
        )
        if bad:
            found[module] = bad
    return found


def _in(*prefixes: str) -> list[str]:
    return [module for module in MODULES if _within(module, *prefixes)]


def test_the_rooms_exist():
    assert {"fruits_assets.cli.main", "fruits_assets.app.predictor", "fruits_assets.bench.standalone_cluster"} <= set(
        MODULES
    )
    assert {"fruits_assets.defs.emr_resources", "fruits_assets.definitions", "spark_code.features.embeddings"} <= set(
        MODULES
    )


@pytest.mark.parametrize(
    ("modules", "forbidden", "allowed"),
    [
        (_in("spark_code"), ("fruits_assets", *DAGSTER, *WEB), ()),
        (_in("fruits_assets.app"), ("fruits_assets", *DAGSTER), ("fruits_assets.app",)),
        (
            [m for m in _in("fruits_assets") if not _within(m, *ROOMS)],
            ROOMS,
            (),
        ),
        (_in("fruits_assets.main_job"), tuple(r for r in ROOMS if r != "fruits_assets.main_job"), ()),
        (_in("fruits_assets.bench", "fruits_assets.emr", "fruits_assets.app"), ("fruits_assets.cli",), ()),
        (["fruits_assets.emr.cluster"], ("fruits_assets.emr.cli",), ()),
    ],
    ids=["spark_code", "app", "dagster code location", "main job", "rooms below the command line", "emr"],
)
def test_imports_flow_one_way(modules, forbidden, allowed):
    assert modules
    assert _violations(modules, forbidden, allowed) == {}
