"""The Dagster UI as people use it, in a real browser: the asset graph by stage, the classes found by the sensor as
partitions, one class materialized by clicking through the Materialize dialog, and its metadata on the asset page.

Screenshots of every step go to $FRUITS_UI_ARTIFACTS (default: pytest's tmp dir), with the server's log.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from fruits_assets.definitions import defs
from tests.ui.conftest import UI_CLASSES, UI_IMAGES_PER_SPLIT, DagsterDev

CLASS_TO_MATERIALIZE = "Kiwi"
SENSOR_TIMEOUT_S = 90
RUN_TIMEOUT_S = 150
ERROR_TEXT = re.compile(
    r"^(Error|Could not launch run)$|Unexpected GraphQL error|can['’]t be displayed|error occurred|failed to load"
    r"|Error loading"
)
"""What Dagster shows when something broke: error toasts and alerts, error boundaries, code location errors."""
RUN_STATUS_QUERY = "query RunStatus($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


class Visit:
    """One person's visit: the page, the server, where screenshots go and the errors the page reported."""

    def __init__(self, page: Page, server: DagsterDev, artifacts: Path) -> None:
        self.page, self.server, self.artifacts = page, server, artifacts
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("console", self._on_console)

    def _on_console(self, message: ConsoleMessage) -> None:
        """Dagster logs GraphQL, network and launch failures with console.error (besides its toasts)."""
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def open(self, path: str) -> None:
        self.page.goto(f"{self.server.url}{path}")
        self.page.wait_for_load_state("networkidle")

    def checkpoint(self, name: str) -> None:
        """Screenshot the step, then fail if the page shows or logged an error."""
        self.page.screenshot(path=self.artifacts / f"{name}.png", animations="disabled")
        shown = [text for text in self.page.get_by_text(ERROR_TEXT).all_inner_texts() if text.strip()]
        assert not shown, f"the UI shows an error at step {name}: {shown}"
        assert not self.errors, f"the page reported errors by step {name}: {self.errors}"


def asset_descriptions() -> dict[str, str]:
    graph = defs.resolve_asset_graph()
    return {key.to_user_string(): graph.get(key).description for key in graph.get_all_asset_keys()}


def asset_groups() -> set[str]:
    graph = defs.resolve_asset_graph()
    return {graph.get(key).group_name for key in graph.get_all_asset_keys()}


def run_status(server: DagsterDev, run_id: str) -> str:
    """The run's status from the GraphQL API: only used to wait, everything a person does goes through the UI."""
    body = json.dumps({"query": RUN_STATUS_QUERY, "variables": {"runId": run_id}}).encode()
    request = urllib.request.Request(f"{server.url}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["data"]["runOrError"]["status"]


def wait_for_run(visit: Visit, run_id: str) -> str:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (status := run_status(visit.server, run_id)) not in FINISHED and time.monotonic() < deadline:
        time.sleep(0.5)
    return status


def node_label(name: str) -> re.Pattern[str]:
    """An asset's name as a graph node shows it: whole, or with its middle cut out ("classi…_evaluation")."""
    return re.compile(rf"^({re.escape(name)}|{re.escape(name[:3])}.*….*{re.escape(name[-3:])})$")


def open_the_whole_graph(visit: Visit) -> None:
    """The global lineage with every group expanded and the side panels hidden, so that nodes show their status."""
    visit.open("/asset-groups")
    page = visit.page
    hide_navigation = page.get_by_text("Hide navigation")
    if hide_navigation.is_visible():  # the choice is remembered by the browser
        hide_navigation.click()
    page.get_by_role("button", name="panel_show_right").click()  # the explorer sidebar
    for group in asset_groups():
        expect(page.get_by_text(group, exact=True)).to_be_visible()
    if not page.get_by_text("raw_images", exact=True).is_visible():
        page.keyboard.press("Alt+e")  # the graph's "Expand all groups"
    for name in asset_descriptions():
        expect(page.get_by_text(node_label(name)).first).to_be_visible()
    viewport = page.locator("[data-svg-viewport]")
    blank_corner = {"x": 20, "y": viewport.bounding_box()["height"] - 20}  # the top is under the toolbar
    viewport.dblclick(position=blank_corner)  # zoom to fit, as wide as the graph is now
    expect(page.get_by_text("Latest event").first).to_be_visible()  # nodes are detailed, not minimal
    page.wait_for_load_state("networkidle")


def see_the_asset_graph(visit: Visit) -> None:
    open_the_whole_graph(visit)
    visit.checkpoint("01-asset-graph")


def see_the_catalog(visit: Visit) -> None:
    visit.open("/assets")
    for name, description in asset_descriptions().items():
        expect(visit.page.get_by_role("link", name=re.compile(rf"^{name}\b"))).to_be_visible()
        expect(visit.page.get_by_text(description, exact=True)).to_be_visible()
    visit.checkpoint("02-catalog")


def see_the_class_partitions(visit: Visit) -> None:
    """The sensor registers the classes shortly after start-up: reload until they are all listed."""
    page = visit.page
    missing = page.get_by_text(f"Missing ({len(UI_CLASSES)})", exact=True)
    deadline = time.monotonic() + SENSOR_TIMEOUT_S
    while True:
        visit.open("/assets/raw_images?view=partitions")
        try:
            expect(missing).to_be_visible(timeout=10_000)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    for name in UI_CLASSES:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    visit.checkpoint("03-partitions")


def launch_one_class(visit: Visit) -> str:
    """Materialize… → pick one class → Launch; returns the run id from the run page the toast leads to."""
    page = visit.page
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize raw_images")
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("menuitem", name=CLASS_TO_MATERIALIZE).click()
    dialog.get_by_text("Launch runs to materialize raw_images").click()  # closes the partition picker
    expect(page.get_by_role("menuitem", name=CLASS_TO_MATERIALIZE)).to_be_hidden()
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    visit.checkpoint("04-materialize-dialog")
    dialog.get_by_role("button", name="Launch 1 run").click()
    toast = page.get_by_text(re.compile(r"^Launched run"))
    expect(toast).to_be_visible()
    page.get_by_role("link", name="View", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    return page.url.rsplit("/runs/", 1)[1].split("?")[0]


def see_the_run_succeed(visit: Visit, run_id: str) -> None:
    status = wait_for_run(visit, run_id)
    visit.open(f"/runs/{run_id}")
    assert status == "SUCCESS", f"run {run_id} ended {status}:\n{visit.server.log_tail()}"
    expect(visit.page.get_by_text("Success", exact=True).first).to_be_visible()
    visit.checkpoint("05-run")


def see_the_metadata(visit: Visit) -> None:
    """The asset's page shows the row count of the class, and its thumbnails as an image."""
    page = visit.page
    visit.open("/assets/raw_images")
    rows = sum(UI_IMAGES_PER_SPLIT.values())
    row_count = page.get_by_role("row").filter(has=page.get_by_text("row_count", exact=True))
    expect(row_count.get_by_role("cell").last).to_have_text(str(rows))
    visit.checkpoint("06-asset-metadata")
    thumbnails = page.get_by_role("row").filter(has=page.get_by_text("thumbnails", exact=True))
    thumbnails.get_by_text("[Show Markdown]").click()
    expect(page.get_by_role("img", name="sample images")).to_be_visible()
    visit.checkpoint("07-thumbnails")


def see_the_graph_after_the_run(visit: Visit) -> None:
    """The graph again, now with one class of raw_images materialized: docs/asset_graph.png is this screenshot."""
    open_the_whole_graph(visit)
    visit.checkpoint("08-asset-graph-after-run")


@pytest.mark.slow
@pytest.mark.ui
def test_a_person_materializes_a_class_from_the_ui(page: Page, dagster_dev: DagsterDev, ui_artifacts: Path) -> None:
    visit = Visit(page, dagster_dev, ui_artifacts)
    try:
        see_the_asset_graph(visit)
        see_the_catalog(visit)
        see_the_class_partitions(visit)
        run_id = launch_one_class(visit)
        see_the_run_succeed(visit, run_id)
        see_the_metadata(visit)
        see_the_graph_after_the_run(visit)
    except Exception:
        page.screenshot(path=ui_artifacts / "failure.png")
        print(f"UI artifacts (screenshots, dagster-dev.log): {ui_artifacts}")
        raise
