"""Headless Chromium (Debian's ``chromium``, never a downloaded build) driven by Playwright, for the
UI tests: one browser per test module, one page per test that records dialogs and script errors,
and screenshots kept under ``test-artifacts/screenshots/``."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.processes import REPO_ROOT

CHROMIUM = Path(os.environ.get("TRACEMESH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) or set TRACEMESH_CHROMIUM")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class BrowserPage:
    """A page with what the user would have noticed: dialogs that opened and script errors."""

    page: Page
    name: str
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def screenshot(self, label: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.name}-{label}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def browser_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[BrowserPage]:
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(10_000)
    watched = BrowserPage(page, re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name))

    def on_dialog(dialog) -> None:
        watched.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    # The UI's own files must all load; API answers may be errors the page is expected to show.
    page.on("response", lambda response: response.status >= 400 and "/api/" not in response.url
            and watched.errors.append(f"{response.status} {response.url}"))
    page.on("console", lambda message: message.type == "error" and not message.text.startswith("Failed to load resource")
            and watched.errors.append(message.text))
    try:
        yield watched
    finally:
        context.close()
    assert watched.errors == [], f"script errors in the page: {watched.errors}"
    assert watched.dialogs == [], f"dialogs opened: {watched.dialogs}"
