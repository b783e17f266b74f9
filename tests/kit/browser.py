"""Debian's headless Chromium, driven by Playwright (never `playwright install`: it downloads a
browser), and the UI opened in it as a student would."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator

from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.kit.live import LiveServer

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def chromium() -> Iterator[Callable[..., Browser]]:
    """Starts Debian's chromium with our flags plus any given; all close together."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, "install Debian's chromium (make test does)"
    launched: list[Browser] = []
    with sync_playwright() as pw:

        def start(*extra: str) -> Browser:
            launched.append(pw.chromium.launch(executable_path=executable, args=[*CHROMIUM_FLAGS, *extra]))
            return launched[-1]

        yield start
        for browser in launched:
            browser.close()


def open_ui(page: Page, server: LiveServer, query: str = "") -> Page:
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.goto(f"{server.url}{server.settings.ui_path}/{query}", wait_until="load")
    expect(page.locator("#student-tab")).to_be_visible(timeout=15_000)
    # The page's load event fills the tutor picker and the engine status last: wait for it, as
    # a student would, before acting.
    expect(page.locator("#engine-status")).to_contain_text("Engines", timeout=15_000)
    # Gradio's page template itself asks a CDN for iframeResizer (async; harmless when it fails).
    outside = [u for u in failed if not u.startswith(server.url) and "iframeResizer" not in u]
    assert not outside, f"page reached outside the server: {outside}"
    return page
