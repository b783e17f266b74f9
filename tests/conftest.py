"""Test harness: the real app served by uvicorn on a loopback port, driven over HTTP and
WebSockets. Engines are chosen by name through the registry; the scripted one is registered
here.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import json  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import pytest  # noqa: E402

from app.settings import Settings  # noqa: E402
from tests.live import LiveServer, free_port, make_settings  # noqa: E402,F401
from tests.scripted import ScriptedLLM  # noqa: E402
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
    llm.register("scripted", factory)
    yield factory
    llm.unregister("scripted")


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


def new_tutor(client: httpx.Client, name: str = "Ada", **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/tutors", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def new_session(client: httpx.Client, tutor_id: int, student_id: int | None = 1) -> dict[str, Any]:
    response = client.post("/v1/sessions", json={"tutor_id": tutor_id, "student_id": student_id})
    assert response.status_code == 201, response.text
    return response.json()


def ws_url(session: dict[str, Any], token: str | None = None) -> str:
    return f"{session['engine_url']}?token={token if token is not None else session['engine_token']}"


async def collect_answer(ws: Any, timeout: float = 30) -> list[dict[str, Any]]:
    """Messages up to and including the final `text` (or an error)."""
    import asyncio

    received: list[dict[str, Any]] = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        received.append(message)
        if message["type"] == "error" or (message["type"] == "text" and message.get("final")):
            return received
