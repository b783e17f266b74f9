"""`python app.py` as an operator runs it: the embedded engines, one port, safe defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import websockets

from tests.conftest import collect_answer, free_port

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    ours = ("MANAGEMENT_", "LLM_", "ALLOW_", "OLLAMA_", "TUTOR_", "ENABLE_", "DEFAULT_LLM", "DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(
        DATA_DIR=str(tmp_path / "data"),
        HF_HUB_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def _wait_healthy(base: str, proc: subprocess.Popen, budget: float) -> tuple[float, dict]:
    started = time.monotonic()
    while time.monotonic() - started < budget:
        assert proc.poll() is None, "app.py exited"
        try:
            response = httpx.get(f"http://{base}/health", timeout=1)
            if response.status_code == 200:
                return time.monotonic() - started, response.json()
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"/health not 200 within {budget}s")


async def test_app_serves_health_ui_and_a_real_local_answer(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py")],
            cwd=tmp_path,
            # A closed port stands in for "no Ollama on this machine", whatever runs on 11434 here.
            env=_env(tmp_path, MANAGEMENT_API_PORT=str(port), OLLAMA_BASE_URL=f"http://127.0.0.1:{free_port()}"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"127.0.0.1:{port}"
    try:
        elapsed, _ = _wait_healthy(base, proc, 30)
        assert elapsed <= 15, f"/health took {elapsed:.1f}s"
        assert httpx.get(f"http://{base}/ui/").status_code == 200
        tutor = httpx.post(f"http://{base}/v1/tutors", json={"name": "Ada", "subject": "math"}).json()
        session = httpx.post(f"http://{base}/v1/sessions", json={"tutor_id": tutor["id"]}).json()
        async with websockets.connect(f"{session['engine_url']}?token={session['engine_token']}") as ws:
            await ws.send(json.dumps({"type": "text", "content": "What is 2 + 2?"}))
            messages = await collect_answer(ws, timeout=60)
        assert messages[-1]["type"] == "text", messages[-1]
        assert len(messages[-1]["content"]) > 5
        assert any(m["type"] == "text_delta" for m in messages)
        # No Ollama here: the embedded model serves, and /health says it is a fallback.
        health = httpx.get(f"http://{base}/health").json()
        assert health["engines"] == {"llm": "local", "embeddings": "minilm"}
        llm = health["stages"]["llm"]
        assert llm["state"] == "ready" and "SmolLM2" in llm["description"]
        assert llm["fallback"] is True and "is unreachable" in llm["detail"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    text = log.read_text()
    assert session["engine_token"] not in text, "the engine token leaked into the log"
    assert "token=***" in text


def test_refuses_a_public_bind_without_a_key(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py")],
        cwd=tmp_path,
        env=_env(tmp_path, MANAGEMENT_API_HOST="0.0.0.0", MANAGEMENT_API_PORT=str(free_port())),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "MANAGEMENT_API_KEY" in result.stdout + result.stderr


def test_public_bind_with_a_key_serves_and_guards(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py")],
        cwd=tmp_path,
        env=_env(tmp_path, MANAGEMENT_API_HOST="0.0.0.0", MANAGEMENT_API_PORT=str(port), MANAGEMENT_API_KEY="k" * 24),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_healthy(f"127.0.0.1:{port}", proc, 30)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/tutors").status_code == 401
        ok = httpx.get(f"http://127.0.0.1:{port}/v1/tutors", headers={"Authorization": "Bearer " + "k" * 24})
        assert ok.status_code == 200
        config = httpx.get(f"http://127.0.0.1:{port}/ui/config").text
        assert "k" * 24 not in config
    finally:
        proc.terminate()
        proc.wait(timeout=20)
