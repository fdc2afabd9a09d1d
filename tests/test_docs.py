"""The README and docs/ held to the code: the options tables to the command line's parsers (`fruits run`, `predict`,
`serve`), the documented variables and defaults to the settings resource, the service's endpoints to its routes,
every `fruits bench` command listed, the README short and starting with its two commands, every relative link and
anchor leading somewhere, every repository path named existing. Nothing here starts Spark or imports TensorFlow."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
MARKDOWN = [README, *PAGES]

README_LIMIT = 12_000
FAULT_ROWS_WHEN_MOVED = 32
"""Rows of the faults table when it moved out of the README: rows are added or merged on purpose, never lost."""

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
OPTION = re.compile(r"`(--[a-z0-9][a-z0-9-]*)")
REPO_PATH = re.compile(r"`((?:tests|fruits_assets|spark_code|emr_config|docs)/[^`\s<>{}]*)`")


# --- reading Markdown ----------------------------------------------------------------------------------------------


def without_fences(text: str) -> str:
    """The text with its fenced code blocks blanked (their lines kept, so that positions stay)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def cells(line: str) -> list[str]:
    """The cells of a Markdown table row (a `|` inside inline code does not split a cell)."""
    body = line.strip().removeprefix("|").removesuffix("|")
    out, current, in_code = [], "", False
    for char in body:
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            out.append(current.strip())
            current = ""
        else:
            current += char
    out.append(current.strip())
    return out


def tables(path: Path) -> list[tuple[str, list[str], list[list[str]]]]:
    """Every table of a page outside code blocks: (the heading above it, its header cells, its rows' cells)."""
    found: list[tuple[str, list[str], list[list[str]]]] = []
    heading, lines = "", without_fences(path.read_text(encoding="utf-8")).splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|[\s:|-]+\|", lines[i + 1].strip()):
            header, rows = cells(line), []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(cells(lines[i]))
                i += 1
            found.append((heading, header, rows))
            continue
        i += 1
    return found


def options_table(path: Path, heading: str) -> list[list[str]]:
    """The rows of the table whose first column is `option` under the given heading."""
    matching = [rows for above, header, rows in tables(path) if above == heading and header[0] == "option"]
    assert len(matching) == 1, f"{path.name}: expected one options table under {heading!r}, found {len(matching)}"
    return matching[0]


def documented_options(rows: list[list[str]]) -> list[str]:
    """The options a table documents: each row's `--option`, or its positional `METAVAR`."""
    names = []
    for row in rows:
        found = OPTION.findall(row[0]) or re.findall(r"`([A-Z][A-Z_]*)", row[0])
        assert len(found) <= 1, f"one option per row: {row[0]!r}"
        names += found
    return names


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (inline code's backticks too), spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings, duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    for line in without_fences(path.read_text(encoding="utf-8")).splitlines():
        if re.match(r"#{1,6} ", line):
            base = slug(line.lstrip("#"))
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(path: Path) -> list[str]:
    """The link and image targets of a page, outside code."""
    return LINK.findall(INLINE_CODE.sub("", without_fences(path.read_text(encoding="utf-8"))))


# --- the command line ----------------------------------------------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.fixture(scope="module")
def commands() -> dict[str, argparse.ArgumentParser]:
    """`fruits`' subcommands, from the very function `fruits` parses with (no command runs: no Spark starts)."""
    cli = importlib.import_module("fruits_assets.cli.main")  # `fruits_assets.cli.main` as an attribute is `main`
    return subcommands(cli._parser())


def parser_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """A command's options by their long name and its positionals by their metavar; argparse's own --help aside."""
    options: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            (name,) = [s for s in action.option_strings if s.startswith("--")]
        else:
            name = action.metavar or action.dest.upper()
        options[name] = action
    return options


def leading_value(cell: str) -> str | None:
    """The value a default cell starts with, when it starts with one in backticks (`0.95`: ...)."""
    match = re.match(r"`([^`]*)`", cell)
    return match.group(1) if match else None


def same_value(documented: str, actual: object) -> bool:
    if isinstance(actual, bool):
        return documented.lower() == str(actual).lower()
    if isinstance(actual, int | float):
        try:
            return float(documented) == float(actual)
        except ValueError:
            return False
    return documented.removeprefix("./") == str(actual).removeprefix("./")


# --- the options tables --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command, page, heading",
    [
        ("run", "main-job.md", "Options"),
        ("predict", "service.md", "`fruits predict`"),
        ("serve", "service.md", "`fruits serve`"),
    ],
)
def test_options_tables_hold_to_help(commands, command, page, heading):
    """Every option of the command is documented once, and no documented option is missing from the command."""
    documented = documented_options(options_table(DOCS / page, heading))
    assert len(documented) == len(set(documented)), f"an option documented twice: {documented}"
    actual = parser_options(commands[command])
    assert set(documented) == set(actual), (
        f"fruits {command}: undocumented {sorted(set(actual) - set(documented))}, "
        f"documented but absent {sorted(set(documented) - set(actual))}"
    )


def test_run_options_name_their_variables_and_defaults(commands):
    """Each row of `fruits run`'s table names the variable its option's setting is read from (none for options
    without one), every setting's variable has a row, and a default the table states is the setting's default."""
    from fruits_assets.defs.resources import ENV_SETTINGS, FruitsSettings
    from spark_code.settings import DEFAULT_OUTPUT_ROOT, OUTPUT_ROOT_ENV

    actions = parser_options(commands["run"])
    field_of_env = {env: field for field, env in ENV_SETTINGS.items()}
    rows = options_table(DOCS / "main-job.md", "Options")
    for row in rows:
        option, env, default = row[0], row[1].strip("` "), row[2]
        names = OPTION.findall(option)
        dest = actions[names[0]].dest if names else field_of_env.get(env)
        assert dest is not None, f"row {row}: no option, and {env!r} is no setting's variable"
        expected_env = OUTPUT_ROOT_ENV if dest == "output_root" else ENV_SETTINGS.get(dest, "")
        assert env == expected_env, f"{option or env}: documented variable {env!r}, the code reads {expected_env!r}"
        value = leading_value(default)
        if value is not None and (dest == "output_root" or dest in FruitsSettings.model_fields):
            actual = DEFAULT_OUTPUT_ROOT if dest == "output_root" else FruitsSettings.model_fields[dest].default
            assert same_value(value, actual), f"{option or env}: documented default {value!r}, the code's {actual!r}"
    documented_envs = {row[1].strip("` ") for row in rows}
    missing = sorted(set(ENV_SETTINGS.values()) - documented_envs)
    assert not missing, f"settings' variables missing from the options table: {missing}"


@pytest.mark.parametrize(
    "command, page, heading", [("predict", "service.md", "`fruits predict`"), ("serve", "service.md", "`fruits serve`")]
)
def test_app_options_defaults_and_variables(commands, command, page, heading):
    """A default the table states for an option with an argparse default is that default; a variable it names is
    read by the command's code."""
    actions = parser_options(commands[command])
    source = "".join(
        (REPO / path).read_text(encoding="utf-8")
        for path in (f"fruits_assets/cli/{command}.py", "fruits_assets/app/service.py", "spark_code/settings.py")
    )
    for row in options_table(DOCS / page, heading):
        env, value = row[1].strip("` "), leading_value(row[2])
        if env:
            assert f'"{env}"' in source or f"{env} =" in source, f"{env} is read nowhere in fruits {command}'s code"
        names = OPTION.findall(row[0])
        if names and value is not None and actions[names[0]].default not in (None, False):
            actual = actions[names[0]].default
            assert same_value(value, actual), f"{names[0]}: documented default {value!r}, the code's {actual!r}"


def test_every_bench_command_is_documented(commands):
    documented = set(re.findall(r"^- `fruits bench ([a-z-]+)", (DOCS / "benchmarks.md").read_text(), re.M))
    actual = set(subcommands(commands["bench"]))
    assert documented == actual, (
        f"undocumented {sorted(actual - documented)}, documented but absent {sorted(documented - actual)}"
    )


def test_the_service_endpoints_are_its_routes(tmp_path):
    """The endpoints table of docs/service.md lists exactly the routes `create_app` declares (feedback's too)."""
    from fastapi.routing import APIRoute

    from fruits_assets.app.service import create_app

    app = create_app(str(tmp_path / "no models"))
    routes = {
        f"{method} {route.path}" for route in app.routes if isinstance(route, APIRoute) for method in route.methods
    }
    assert len(routes) >= 5
    (rows,) = [rows for _, header, rows in tables(DOCS / "service.md") if header[0] == "endpoint"]
    documented = {row[0].strip("`") for row in rows}
    assert documented == routes, f"undocumented {sorted(routes - documented)}, absent {sorted(documented - routes)}"


# --- the README ----------------------------------------------------------------------------------------------------


def test_readme_fits_a_screen_or_so():
    size = len(README.read_bytes())
    assert size < README_LIMIT, f"README.md is {size} bytes; depth goes to docs/"


def test_readme_starts_with_the_two_commands():
    """The README's first code block, before any section, runs the main job (`make run`, variables before it
    allowed) then the tests (`make test`), and nothing else."""
    text = README.read_text(encoding="utf-8")
    first = re.search(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M)
    assert first is not None, "the README has no code block"
    assert "\n## " not in text[: first.start()], "the two commands come before the README's first section"
    commands = [line for line in first.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]
    words = [[w for w in shlex.split(line) if not re.match(r"[A-Z_][A-Z0-9_]*=", w)] for line in commands]
    assert words == [["make", "run"], ["make", "test"]], f"the README's first commands are {commands}"


def test_readme_links_every_docs_page():
    linked = {(README.parent / target.split("#")[0]).resolve() for target in links(README)}
    missing = [page.name for page in PAGES if page.resolve() not in linked]
    assert PAGES and not missing, f"docs pages the README does not link: {missing}"


# --- links and paths -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_lead_somewhere(page):
    """Each relative link names an existing file, and its anchor (if any) a heading of the page it leads to."""
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not checked offline
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_repository_paths_named_exist(page):
    """Every repository path a page names in inline code (a test, a module, a file of emr_config/) exists, so the
    docs follow a module that moves."""
    text = without_fences(page.read_text(encoding="utf-8"))
    missing = sorted({p for p in REPO_PATH.findall(text) if not list(REPO.glob(p.rstrip("/")))})
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


def test_the_faults_table_is_whole():
    """Every fault names what happens and at least one test file; no row was lost in the move."""
    (rows,) = [rows for _, header, rows in tables(DOCS / "faults.md") if header[0] == "fault"]
    assert len(rows) >= FAULT_ROWS_WHEN_MOVED
    for row in rows:
        assert len(row) == 3 and all(row), f"a fault row needs fault, what happens, test: {row}"
        assert re.search(r"`tests/[^`]+\.py`", row[2]), f"a fault without its test: {row[0]!r}"
