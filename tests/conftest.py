"""Test harness: the real app served by uvicorn on a loopback port, driven over HTTP and
WebSockets. Engines are chosen by name through the registry; the scripted one is registered
here.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import json  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import pytest  # noqa: E402
import uvicorn  # noqa: E402

from app.server import Services, build_services, create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from tests.scripted import ScriptedLLM  # noqa: E402
from tutors import llm  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """One real server process-in-a-thread; `restart()` keeps the data directory."""

    def __init__(self, settings: Settings, with_ui: bool = False) -> None:
        self.settings = settings
        self.with_ui = with_ui
        self.services: Services | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.management_api_port}"

    @property
    def engine(self) -> Any:
        assert self.services is not None
        return self.services.hub.get("llm")

    def start(self) -> LiveServer:
        self.services = build_services(self.settings)
        app = create_app(self.services, with_ui=self.with_ui)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.settings.management_api_port,
            log_level="warning",
            ws_max_size=self.settings.ws_max_message_bytes * 2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
        self._server = self._thread = None

    def restart(self) -> LiveServer:
        self.stop()
        return self.start()

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "management_api_port": free_port(),
        "llm_engine": "scripted",
        "session_sweep_seconds": 0.2,
    }
    values.update(overrides)
    # _env_file=None: the developer's own .env must not leak into tests.
    return Settings(_env_file=None, **values)


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
