"""The service's page in headless Chromium: a person picks a photo and reads the fruit, its guesses and facts.

Screenshots go to the UI artifacts (`service-page-phone.png` is docs/service_page.png)."""

import pytest
from playwright.sync_api import Browser, expect

from tests.fruits_assets.app.served import Served


@pytest.mark.ui
@pytest.mark.parametrize(("device", "viewport"), [("phone", (390, 844)), ("desktop", (1280, 800))])
def test_a_person_picks_a_photo_and_sees_the_fruit(
    browser: Browser, trained_run, small_root, ui_artifacts, device, viewport
):
    photo = next((small_root / "Test" / "Kiwi").iterdir())
    with Served(trained_run[1]) as served:
        context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(served.url)
        expect(page.get_by_text("What fruit is this?")).to_be_visible()
        page.set_input_files("#photo", str(photo))
        expect(page.locator("#fruit")).to_have_text("Kiwi")
        expect(page.locator("#probability")).to_contain_text("Kiwi: ")
        expect(page.locator("#guesses li")).to_have_count(2)
        expect(page.locator("#facts")).to_contain_text("Vitamin C")
        expect(page.locator("#model")).to_contain_text("classifier ")
        shot = ui_artifacts / f"service-page-{device}.png"
        page.screenshot(path=str(shot), full_page=True)

        page.set_input_files("#photo", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo"})
        expect(page.locator("#error")).to_contain_text("not an image")
        context.close()
    assert not errors or all("415" in error for error in errors), errors
