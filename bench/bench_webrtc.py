"""Live calls over a real relay-only WebRTC connection, through coturn on loopback.

    python -m bench.bench_webrtc [--turns 20] [--setups 10] [--max-calls 8]

1. set-up: offer sent → first media frame received (ICE through the relay, DTLS, first
   RTP), p50/p95;
2. turns, on `app.py` with the embedded engines (SmolLM2, Whisper tiny.en, Silero VAD, Piper,
   the warp lip-sync on a 512 px avatar), for a tutor answering with SmolLM2 and then for one
   with course notes on the questions (grounded: the evidence quoted, no model asked): a
   student (aiortc, relay-only) speaks Piper questions
   into its microphone track; from the end of the student's speech: the transcript (WebSocket),
   the first loud 20 ms of the tutor's voice received on the call, and the first video frame
   received after it (the server changes the picture when its audio starts playing, so this is
   the first lip-synced frame, plus the video path's own delay);
3. capacity, on the app with the instant scripted LLM: k calls at once, every tutor speaking
   (lip-synced) at the same time; the video frames per second each student receives, and how
   much of the voice arrived, and the share of frames the server drew too late (each a 40 ms
   gap in the voice). Sustained: >= 24 fps received and < 2 % late.

Targets: first audio and first video frame <= 1.5 s p50 after the end of speech (2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

from bench.bench_voice import NOTES, QUESTIONS, course
from bench.common import ServerProcess, latency_summary, report
from tests.kit.calls import Call, loopback_coturn
from tests.kit.media import portrait_video
from tests.kit.speech import say

SECRET = "bench-webrtc-secret"
PERSONA = "You are a science tutor for children. Answer in one or two short sentences."
STORY = (
    "Once upon a time a small robot learned to read. It read about the sea, and about the stars. "
    "Then it read about volcanoes, and it wanted to see one. So it walked for many days to the mountain."
)


def _server(scripted: bool, turn_port: int) -> ServerProcess:
    env = {
        "ENABLE_ASR": "true",
        "ENABLE_TTS": "true",
        "ENABLE_AVATAR": "true",
        "TTS_ENGINE": "piper",
        "ASR_LANGUAGE": "en",
        "TURN_SECRET": SECRET,
        "WEBRTC_TURN_SERVER": f"turn:127.0.0.1:{turn_port}",
        "MAX_SESSIONS": "32",
    }
    server = ServerProcess(scripted, **env)
    server.wait_healthy(180)
    return server


def _tutor(server: ServerProcess, video: Path, notes: bool = False) -> int:
    """A tutor with the avatar (prepared once per server); with `notes`, course notes on the
    questions, so its answers are grounded (the evidence quoted)."""
    with httpx.Client(base_url=server.url, timeout=60) as api:
        if api.get("/v1/avatars/teacher").status_code == 404:
            with video.open("rb") as f:
                files = {"file": ("t.mp4", f, "video/mp4")}
                api.post("/v1/avatars/upload", data={"avatar_id": "teacher"}, files=files)
        deadline = time.monotonic() + 120
        while api.get("/v1/avatars/teacher").json()["status"] != "ready":
            if time.monotonic() > deadline:
                raise RuntimeError("the avatar was not prepared")
            time.sleep(0.5)
        kb_ids = [course(api, "science", NOTES)] if notes else []
        tutor = {"name": "Ada", "persona": PERSONA, "avatar_id": "teacher", "kb_ids": kb_ids}
        return api.post("/v1/tutors", json=tutor).json()["id"]


def _session(server: ServerProcess, tutor_id: int, student: int) -> tuple[dict[str, Any], dict[str, Any]]:
    with httpx.Client(base_url=server.url, timeout=30) as api:
        session = api.post("/v1/sessions", json={"tutor_id": tutor_id, "student_id": student}).json()
        return session, api.get("/v1/webrtc/config").json()


async def _offer(ws: Any, offer: dict[str, str]) -> dict[str, str]:
    await ws.send(json.dumps({"type": "webrtc_offer", "content": offer}))
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if message["type"] == "webrtc_answer":
            return message["content"]
        if message["type"] == "error":
            raise RuntimeError(message["content"])


async def _until_quiet(call: Call, since: float, quiet: float = 1.2, budget: float = 90) -> None:
    """The tutor has spoken and then been silent for `quiet` seconds."""
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        heard = [t for t in call.loud if t > since]
        if heard and time.monotonic() - heard[-1] > quiet:
            return
        await asyncio.sleep(0.1)


async def setups(server: ServerProcess, tutor_id: int, count: int) -> list[float]:
    times = []
    for n in range(count):
        session, config = _session(server, tutor_id, 1000 + n)
        call = Call(config)
        async with websockets.connect(f"{session['engine_url']}?token={session['engine_token']}") as ws:
            times.append(await call.open(lambda offer, ws=ws: _offer(ws, offer)) * 1000)
        await call.close()
        await asyncio.sleep(0.5)
    return times


async def turns(server: ServerProcess, tutor_id: int, count: int) -> list[dict[str, float]]:
    session, config = _session(server, tutor_id, 1)
    call = Call(config)
    rows = []
    heard: asyncio.Queue[float] = asyncio.Queue()

    async def read(ws: Any) -> None:
        # Read everything as it comes: a client that stops reading stalls its socket.
        async for raw in ws:
            if json.loads(raw)["type"] == "transcription":
                heard.put_nowait(time.monotonic())

    async with websockets.connect(f"{session['engine_url']}?token={session['engine_token']}") as ws:
        await call.open(lambda offer: _offer(ws, offer))
        reader = asyncio.create_task(read(ws))
        await asyncio.sleep(1.0)
        for n in range(count):
            call.speech_ended = 0.0
            seconds = call.say(say(QUESTIONS[n % len(QUESTIONS)], 48_000))
            await asyncio.sleep(seconds)
            while call.speech_ended == 0 or time.monotonic() < call.speech_ended:
                await asyncio.sleep(0.01)
            ended = call.speech_ended
            transcript = await asyncio.wait_for(heard.get(), 60)
            await _until_quiet(call, ended)
            voice = call.loud_after(ended)
            video = call.video_after(voice) if voice else None
            row = {"turn": n + 1, "transcript_ms": (transcript - ended) * 1000}
            if voice is not None and video is not None:
                row |= {"first_audio_ms": (voice - ended) * 1000, "first_video_ms": (video - ended) * 1000}
            rows.append(row)
            print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        reader.cancel()
    await call.close()
    return rows


async def capacity(server: ServerProcess, tutor_id: int, calls: int, seconds: float = 6.0) -> dict[str, Any]:
    opened: list[tuple[Call, Any]] = []
    try:
        for n in range(calls):
            session, config = _session(server, tutor_id, 2000 + n)
            # This client never reads its socket: no keepalive, or its pings would go unanswered.
            url = f"{session['engine_url']}?token={session['engine_token']}"
            ws = await websockets.connect(url, ping_interval=None)
            call = Call(config)
            await call.open(lambda offer, ws=ws: _offer(ws, offer))
            opened.append((call, ws))
        await asyncio.sleep(1.0)
        for _, ws in opened:  # every tutor starts a long spoken answer at once
            await ws.send(json.dumps({"type": "text_webrtc", "content": STORY}))
        await asyncio.sleep(3.0)  # the answers are under way
        before = [(len(c.video), len(c.loud)) for c, _ in opened]
        health = httpx.get(f"{server.url}/health").json()["webrtc"]
        await asyncio.sleep(seconds)
        after = httpx.get(f"{server.url}/health").json()["webrtc"]
        late = (after["underruns"] - health["underruns"]) / max(1, after["frames"] - health["frames"])
        fps = [(len(c.video) - v) / seconds for (c, _), (v, _) in zip(opened, before, strict=True)]
        voiced = [(len(c.loud) - a) * 0.02 / seconds for (c, _), (_, a) in zip(opened, before, strict=True)]
        return {
            "calls": calls,
            "min_fps": round(min(fps), 1),
            "mean_fps": round(sum(fps) / len(fps), 1),
            "voiced_share": round(min(voiced), 2),
            "late_frames": round(late, 3),
            "sustained": min(fps) >= 24 and late < 0.02,
        }
    finally:
        for call, ws in opened:
            await call.close()
            await ws.close()


async def run(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-webrtc-"))
    video = portrait_video(folder / "teacher.mp4", seconds=3.0, size=(640, 480))
    with loopback_coturn(SECRET, ports=4 * args.max_calls + 8) as turn:
        port = turn.config.listening_port
        server = _server(scripted=False, turn_port=port)
        try:
            tutor_id = _tutor(server, video)
            setup_ms = await setups(server, tutor_id, args.setups)
            turn_rows = await turns(server, tutor_id, args.turns)
            grounded_rows = await turns(server, _tutor(server, video, notes=True), args.turns)
        finally:
            server.stop()
        scripted = _server(scripted=True, turn_port=port)
        try:
            tutor_id = _tutor(scripted, video)
            load = []
            for k in sorted({1, 2, 4, *range(6, args.max_calls + 1, 2)}):
                load.append(await capacity(scripted, tutor_id, k))
                print(json.dumps(load[-1]), flush=True)
                if not load[-1]["sustained"]:
                    break
                await asyncio.sleep(2.0)
        finally:
            scripted.stop()
    rows = [{"measure": "set-up: offer → first media frame", **latency_summary(setup_ms)}]
    for answers, measured in (("SmolLM2 answers", turn_rows), ("course notes, grounded", grounded_rows)):
        done = [r for r in measured if "first_audio_ms" in r]
        rows += [
            {
                "measure": f"{answers}: end of speech → transcript",
                **latency_summary([r["transcript_ms"] for r in measured]),
            },
            {"measure": f"{answers}: → first tutor audio", **latency_summary([r["first_audio_ms"] for r in done])},
            {"measure": f"{answers}: → first lip-synced frame", **latency_summary([r["first_video_ms"] for r in done])},
        ]
    sustained = max((r["calls"] for r in load if r["sustained"]), default=0)
    report(
        "webrtc",
        rows,
        {
            "turns": turn_rows,
            "grounded_turns": grounded_rows,
            "capacity": load,
            "sustained_calls_at_25fps": sustained,
            "cpus": os.cpu_count(),
            "avatar_px": 512,
        },
    )
    print("\ncapacity (every tutor speaking, lip-synced, 512 px):")
    for row in load:
        print(json.dumps(row))
    print(f"sustained at >= 24 fps: {sustained} calls")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--setups", type=int, default=10)
    parser.add_argument("--max-calls", type=int, default=8)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
