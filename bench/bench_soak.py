"""Soak: many students talking for a long time, on the real embedded engines.

    python -m bench.bench_soak [--sessions 20] [--minutes 20]

`app.py` runs the embedded engines (SmolLM2, Whisper tiny.en, Silero VAD, Piper; no avatar, so
that the two cores go to the conversation). `--sessions` students, each on their own session
and WebSocket, ask questions without end, every other one spoken (a Piper-voiced WAV sent as
push-to-talk), with 1–4 s of thought between an answer and the next question, for
`--minutes`. Every message is checked: no `error`, each question answered exactly once (text,
and the voice to its last chunk), every message tagged with its own session and chat (none
crossed). The server's resident memory is read from /proc every 30 s: flat means the last
third of the run does not grow past the first third by more than noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

from bench.bench_voice import QUESTIONS
from bench.common import ServerProcess, latency_summary, report
from tests.kit.speech import b64_wav, say, with_silence


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Student:
    def __init__(self, n: int, session: dict[str, Any], voices: list[str], deadline: float) -> None:
        self.n, self.session, self.voices, self.deadline = n, session, voices, deadline
        self.chat = f"chat-{n}"
        self.asked = self.answered = 0
        self.errors: list[str] = []
        self.crossed = 0
        self.latencies: list[float] = []

    def _check(self, message: dict[str, Any]) -> None:
        if message.get("engine_session_id") != self.session["session_id"] or message.get("session_id") != self.chat:
            self.crossed += 1
        if message["type"] == "error":
            self.errors.append(message.get("content", ""))

    async def _answer(self, ws: Any, spoken: bool) -> None:
        """Until the whole answer is in: its text, and its voice to the last chunk."""
        text = voice_done = heard = False
        while not (text and voice_done):
            message = json.loads(await asyncio.wait_for(ws.recv(), 180))
            self._check(message)
            kind = message["type"]
            if kind == "error":
                return
            heard |= kind == "transcription"
            text |= kind == "text" and bool(message.get("final"))
            voice_done |= kind == "audio" and bool(message.get("final"))
        if spoken and not heard:
            self.errors.append("a spoken question came back without its transcription")
        self.answered += 1

    async def run(self) -> None:
        rng = random.Random(self.n)
        url = f"{self.session['engine_url']}?token={self.session['engine_token']}"
        async with websockets.connect(url, max_size=None, open_timeout=60) as ws:
            while time.monotonic() < self.deadline:
                spoken = self.asked % 2 == 1
                k = rng.randrange(len(QUESTIONS))
                content = self.voices[k] if spoken else QUESTIONS[k]
                started = time.perf_counter()
                await ws.send(
                    json.dumps({"type": "audio" if spoken else "text", "content": content, "session_id": self.chat})
                )
                self.asked += 1
                await self._answer(ws, spoken)
                self.latencies.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(rng.uniform(1, 4))


async def soak(server: ServerProcess, sessions: int, minutes: float) -> dict[str, Any]:
    api = httpx.Client(base_url=server.url, timeout=30)
    tutor = api.post("/v1/tutors", json={"name": "Ada", "subject": "science"}).json()
    voices = [b64_wav(with_silence(say(q), 0.3, 0.6)) for q in QUESTIONS]
    # One spoken and one typed question first: every engine loaded before memory is measured.
    warm = Student(-1, api.post("/v1/sessions", json={"tutor_id": tutor["id"]}).json(), voices, time.monotonic() + 1)
    await warm.run()
    deadline = time.monotonic() + minutes * 60
    students = [
        Student(n, api.post("/v1/sessions", json={"tutor_id": tutor["id"]}).json(), voices, deadline)
        for n in range(sessions)
    ]
    memory: list[tuple[float, float]] = []
    began = time.monotonic()

    async def sample() -> None:
        while True:
            memory.append((round(time.monotonic() - began), rss_mb(server.proc.pid)))
            await asyncio.sleep(30)

    sampler = asyncio.create_task(sample())
    results = await asyncio.gather(*(s.run() for s in students), return_exceptions=True)
    sampler.cancel()
    memory.append((round(time.monotonic() - began), rss_mb(server.proc.pid)))
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    third = max(1, len(memory) // 3)
    first, last = statistics.fmean(m for _, m in memory[:third]), statistics.fmean(m for _, m in memory[-third:])
    latency = latency_summary([ms for s in students for ms in s.latencies])
    return {
        "sessions": sessions,
        "minutes": minutes,
        "asked": sum(s.asked for s in students),
        "answered": sum(s.answered for s in students),
        "errors": sum(len(s.errors) for s in students) + len(failures),
        "crossed": sum(s.crossed for s in students),
        "answer_p50_s": round(latency["p50_ms"] / 1000, 2),
        "answer_p95_s": round(latency["p95_ms"] / 1000, 2),
        "rss_start_mb": round(memory[0][1]),
        "rss_end_mb": round(memory[-1][1]),
        "rss_first_third_mb": round(first),
        "rss_last_third_mb": round(last),
        "_memory": memory,
        "_failures": failures + [e for s in students for e in s.errors][:20],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--name", default="soak", help="bench/results/<name>.json")
    args = parser.parse_args()
    server = ServerProcess(
        scripted=False,
        LLM_ENGINE="local",
        TTS_ENGINE="offline",
        ENABLE_AVATAR="false",
        LLM_MAX_TOKENS="48",
        MAX_SESSIONS=str(args.sessions + 2),
    )
    try:
        server.wait_ready()
        row = asyncio.run(soak(server, args.sessions, args.minutes))
    finally:
        server.stop()
    extra = {"memory_mb": row.pop("_memory"), "failures": row.pop("_failures")}
    report(args.name, [row], extra)
    lost = row["asked"] - row["answered"]
    print(f"\nlost {lost}, errors {row['errors']}, crossed {row['crossed']}; failures: {extra['failures'][:5]}")


if __name__ == "__main__":
    main()
