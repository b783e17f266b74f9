"""Test harness: the real app served by uvicorn on a loopback port, driven over HTTP and
WebSockets. Engines are chosen by name through the registry; the scripted one is registered
here.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import pytest  # noqa: E402

from app.core.settings import Settings  # noqa: E402
from tests.kit.browser import chromium  # noqa: E402
from tests.kit.live import LiveServer, make_settings  # noqa: E402
from tests.kit.scripted import ScriptedLLM  # noqa: E402
from tests.kit.servers import Postgres, running_postgres  # noqa: E402
from tutors import llm  # noqa: E402


class ScriptedFactory:
    """Builds the scripted engine for each server; set `delay` before starting one."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.engine: ScriptedLLM | None = None

    def __call__(self, settings: Settings) -> ScriptedLLM:
        self.engine = ScriptedLLM(delay=self.delay)
        return self.engine


@pytest.fixture
def scripted_engine() -> Iterator[ScriptedFactory]:
    factory = ScriptedFactory()
    llm.LLM_ENGINES.register("scripted", factory)
    yield factory
    llm.LLM_ENGINES.unregister("scripted")


@pytest.fixture
def start_server(tmp_path: Path, scripted_engine: ScriptedFactory) -> Iterator[Any]:
    servers: list[LiveServer] = []

    def start(with_ui: bool = False, **overrides: Any) -> LiveServer:
        server = LiveServer(make_settings(tmp_path, **overrides), with_ui=with_ui).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server: Any) -> LiveServer:
    return start_server()


@pytest.fixture
def api(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL server for the run; each test asks it for a fresh database."""
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def launch() -> Iterator[Callable[..., Any]]:
    """Starts headless Chromium (with extra flags, if given); one Playwright per module."""
    with chromium() as start:
        yield start


@pytest.fixture(scope="module")
def browser(launch: Callable[..., Any]) -> Any:
    return launch()
