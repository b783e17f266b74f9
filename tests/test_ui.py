"""The Gradio UI in real headless Chromium: a student chats, a teacher creates a tutor."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import LiveServer, new_tutor

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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, "install Debian's chromium (CI does: .ci/run)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def ui_server(start_server) -> LiveServer:
    return start_server(with_ui=True, management_api_key="teacher-key-123")


def _open(browser: Browser, server: LiveServer) -> Page:
    page = browser.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.goto(f"{server.url}{server.settings.ui_path}/", wait_until="load")
    expect(page.locator("#student-tab")).to_be_visible(timeout=15_000)
    # Gradio's page template itself asks a CDN for iframeResizer (async; harmless when it fails).
    outside = [u for u in failed if not u.startswith(server.url) and "iframeResizer" not in u]
    assert not outside, f"page reached outside the server: {outside}"
    return page


def test_student_sees_greeting_and_a_streamed_answer(browser: Browser, ui_server: LiveServer) -> None:
    with ui_server.client("teacher-key-123") as api:
        new_tutor(api, "Ada", subject="Math", greeting="Hello, I am Ada!")
    page = _open(browser, ui_server)
    expect(page.locator("#engine-status")).to_contain_text("scripted")
    chat = page.locator("#chat")
    expect(chat).to_contain_text("Hello, I am Ada!", timeout=10_000)
    page.locator("#question textarea").fill("What is a fraction?")
    page.locator("#send").click()
    expect(chat).to_contain_text("[Ada|0] What is a fraction?", timeout=15_000)
    page.locator("#question textarea").fill("And a decimal?")
    page.locator("#question textarea").press("Enter")
    expect(chat).to_contain_text("[Ada|1] And a decimal?", timeout=15_000)
    # The UI's conversation is a real session, counted like any other.
    assert ui_server.services.sessions.count_active() == 1
    page.close()


def test_teacher_creates_a_tutor_only_with_the_key(browser: Browser, ui_server: LiveServer) -> None:
    page = _open(browser, ui_server)
    page.get_by_role("tab", name="Teacher").click()
    page.locator("#tutor-name textarea").fill("Wang Laoshi")
    page.locator("#tutor-subject textarea").fill("语文")
    page.locator("#create-tutor").click()
    expect(page.get_by_text("wrong management API key").first).to_be_visible(timeout=10_000)
    assert ui_server.services.tutors.list() == []

    page.get_by_label("Management API key").fill("teacher-key-123")
    page.locator("#create-tutor").click()
    expect(page.locator("#teacher-notice")).to_contain_text("Created tutor Wang Laoshi", timeout=10_000)
    assert [t.subject for t in ui_server.services.tutors.list()] == ["语文"]
    # The key is checked on the server and never appears in the page's public config.
    with ui_server.client() as anonymous:
        config = anonymous.get(f"{ui_server.settings.ui_path}/config")
    assert config.status_code == 200 and "teacher-key-123" not in config.text
    page.close()
