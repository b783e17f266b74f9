"""The real-time path's own machinery, without a server: stages pass through what they do not
handle, background stages let the rest flow on, errors and interruptions arrive in order, and
the turn runner queues, refuses, interrupts and translates failures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from app.conversation.frames import (
    AnswerText,
    AudioOut,
    Failure,
    Frame,
    Interrupted,
    LLMRequest,
    NoticeFrame,
    Sentence,
    TextDelta,
    TurnStarted,
    UserText,
)
from app.conversation.pipeline import Pipeline, Stage
from app.conversation.runner import TurnRunner
from app.conversation.service import Answer
from app.conversation.stages import Generate, Sentences, Speak
from app.core.engines import ChatMessage, GenerationOptions
from app.core.errors import EngineUnavailable, InvalidInput, TooBusy
from app.core.media import PCM, Speech, Voice
from app.core.metrics import Metrics
from app.speech.sentences import first_spoken, speakable
from tests.kit.scripted import ScriptedLLM


class Echo(Stage):
    """Each text delta twice; remembers every frame it saw."""

    accepts = (TextDelta,)

    def __init__(self) -> None:
        self.seen: list[Frame] = []

    def observe(self, frame: Frame) -> None:
        self.seen.append(frame)

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        assert isinstance(frame, TextDelta)
        yield frame
        yield TextDelta(frame.text.upper())


class Slow(Stage):
    """A background stage whose work waits for `release`; it records what became of it."""

    accepts = (Sentence,)
    background = True

    def __init__(self, fail_on: str | None = None) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.cancelled = 0
        self.fail_on = fail_on
        self.seen: list[Frame] = []

    def observe(self, frame: Frame) -> None:
        self.seen.append(frame)

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        assert isinstance(frame, Sentence)
        if frame.text == self.fail_on:
            raise EngineUnavailable(f"cannot say {frame.text!r}")
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        yield NoticeFrame("said", frame.text)


class Failing(Stage):
    accepts = (UserText,)

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        yield NoticeFrame("before", "sent before the error")
        raise InvalidInput("this stage failed")


async def _all(pipeline: Any) -> list[Frame]:
    async with asyncio.timeout(5):  # a pipeline that loses its end hangs: fail instead
        return [frame async for frame in pipeline]


async def _until_error(pipeline: Any) -> tuple[list[Frame], BaseException]:
    received: list[Frame] = []
    try:
        async with asyncio.timeout(5):
            async for frame in pipeline:
                received.append(frame)
    except (TimeoutError, AssertionError):
        raise
    except Exception as exc:
        return received, exc
    raise AssertionError(f"no error came; got {received}")


async def test_frames_a_stage_does_not_handle_flow_past_in_order() -> None:
    echo = Echo()
    frames = [UserText("q"), TextDelta("a"), NoticeFrame("n", "note"), TextDelta("b")]
    out = await _all(Pipeline([echo], *frames))
    assert out == [
        UserText("q"),
        TextDelta("a"),
        TextDelta("A"),
        NoticeFrame("n", "note"),
        TextDelta("b"),
        TextDelta("B"),
    ]
    assert echo.seen == frames


async def test_a_background_stage_lets_everything_else_flow_on_at_once() -> None:
    slow = Slow()
    pipeline = Pipeline([Echo(), slow], Sentence("one"), TextDelta("x"), Sentence("two"), TextDelta("y"))
    stream = aiter(pipeline)
    # The text comes while the first sentence is still being worked on.
    assert [await anext(stream) for _ in range(4)] == [TextDelta("x"), TextDelta("X"), TextDelta("y"), TextDelta("Y")]
    assert slow.started.is_set()
    slow.release.set()
    assert await _all(stream) == [NoticeFrame("said", "one"), NoticeFrame("said", "two")]


async def test_an_error_comes_after_what_its_stage_sent_and_stops_the_background_work() -> None:
    slow = Slow()
    received, error = await _until_error(Pipeline([Failing(), slow], Sentence("pending"), UserText("q")))
    assert isinstance(error, InvalidInput) and error.message == "this stage failed"
    assert received == [NoticeFrame("before", "sent before the error")]
    assert slow.cancelled == 1, "the background work in flight was stopped"


async def test_a_background_worker_error_comes_after_its_earlier_output() -> None:
    slow = Slow(fail_on="bad")
    slow.release.set()
    received, error = await _until_error(Pipeline([slow], Sentence("good"), Sentence("bad"), Sentence("never")))
    assert isinstance(error, EngineUnavailable) and error.message == "cannot say 'bad'"
    assert received == [NoticeFrame("said", "good")]


async def test_leaving_early_cancels_every_stage() -> None:
    slow = Slow()
    pipeline = Pipeline([Echo(), slow], TextDelta("a"), Sentence("held"))
    stream = aiter(pipeline)
    assert await anext(stream) == TextDelta("a")
    await slow.started.wait()
    await stream.aclose()  # the student hung up
    assert slow.cancelled == 1


async def test_an_interruption_reaches_every_stage_then_the_consumer_and_nothing_follows_it() -> None:
    echo, slow = Echo(), Slow()
    pipeline = Pipeline([echo, slow], TextDelta("a"), Sentence("one"), Sentence("two"), TextDelta("b"))
    received: list[Frame] = []

    async def consume() -> None:
        async for frame in pipeline:
            received.append(frame)

    consumer = asyncio.create_task(consume())
    await slow.started.wait()
    await pipeline.interrupt()
    assert slow.cancelled == 1, "interrupt() returns once the work in flight has stopped"
    slow.release.set()
    await asyncio.wait_for(consumer, 5)
    assert received[-1] == Interrupted()
    assert NoticeFrame("said", "one") not in received and NoticeFrame("said", "two") not in received
    assert slow.cancelled == 1
    assert echo.seen[-1] == Interrupted() and slow.seen[-1] == Interrupted()


async def test_an_interruption_before_the_turn_starts_ends_it_at_once() -> None:
    slow = Slow()
    pipeline = Pipeline([slow], Sentence("never"))
    await pipeline.interrupt()
    assert await _all(pipeline) == [Interrupted()]
    assert not slow.started.is_set()


# -- the real stages ----------------------------------------------------------------------------
async def test_generate_streams_the_answer_and_an_interruption_stops_the_engine() -> None:
    engine = ScriptedLLM(pieces=3)
    request = LLMRequest([ChatMessage("system", "You are Ada, a tutor."), ChatMessage("user", "hi")], _OPTIONS)
    out = await _all(Pipeline([Generate(engine)], request))
    deltas = [f.text for f in out if isinstance(f, TextDelta)]
    (answer,) = [f for f in out if isinstance(f, AnswerText)]
    assert len(deltas) == 3 and answer.text == "".join(deltas) == "[Ada|0] hi"
    assert answer.engine == "scripted" and answer.first_token_ms is not None

    slow = ScriptedLLM(delay=0.5, pieces=10)
    pipeline = Pipeline([Generate(slow)], request)
    stream = aiter(pipeline)
    assert isinstance(await anext(stream), TextDelta)
    await pipeline.interrupt()
    assert await _all(stream) == [Interrupted()]
    assert slow.cancelled == 1


async def test_sentences_cut_streamed_and_whole_answers_alike() -> None:
    streamed = await _all(
        Pipeline([Sentences()], TextDelta("The cell is small. It has a "), TextDelta("nucleus."), AnswerText("x"))
    )
    assert [f.text for f in streamed if isinstance(f, Sentence)] == ["The cell is small.", "It has a nucleus."]
    assert [f.final for f in streamed if isinstance(f, Sentence)] == [False, True]
    whole = await _all(Pipeline([Sentences()], AnswerText("Not covered. Ask your teacher.")))
    assert [(f.text, f.final) for f in whole if isinstance(f, Sentence)] == [
        ("Not covered.", False),
        ("Ask your teacher.", True),
    ]

    # What foresight speaks ahead is the first piece, exactly as the voice will be handed it.
    for answer in (
        "Gravity is the force that pulls objects towards each other [1].",
        "**Cells** are small. They divide.",
        "细胞是生命的基本单位。它很小。",
        "Short.",
    ):
        cut = await _all(Pipeline([Sentences()], AnswerText(answer)))
        first = next(f.text for f in cut if isinstance(f, Sentence) and speakable(f.text))
        assert first_spoken(answer, 160) == speakable(first), answer


class _Voice:
    name = "scripted-voice"
    description = "speaks anything but 'fail'"

    def warmup(self) -> None:
        pass

    async def synthesize(self, text: str, voice: Voice) -> Speech:
        if "fail" in text:
            raise EngineUnavailable("the voice broke")
        return Speech(PCM.silence(0.1, 16_000), text, self.name)


async def test_a_voice_that_fails_costs_the_rest_of_the_audio_never_the_text() -> None:
    started = TurnStarted(Voice.resolve(None, "en"))
    frames = [started, Sentence("One."), Sentence("Then fail."), TextDelta("text"), Sentence("Three.", final=True)]
    out = await _all(Pipeline([Speak(_Voice())], *frames))
    spoken = [f for f in out if isinstance(f, AudioOut)]
    assert [a.speech.text for a in spoken] == ["One."] and spoken[0].seq == 0
    assert NoticeFrame("speech_unavailable", "The answer cannot be spoken: the voice broke") in out
    assert TextDelta("text") in out


# -- the turn runner ----------------------------------------------------------------------------
_OPTIONS = GenerationOptions(model=None, temperature=0.4, max_tokens=64)


class Turns:
    """A runner whose answers are pipelines over scripted frames, and what its sink got."""

    def __init__(self, max_pending: int = 2) -> None:
        self.sunk: list[tuple[Frame, Any]] = []
        self.playing = False
        self.gates: dict[str, Slow] = {}
        self.runner: TurnRunner[str] = TurnRunner(
            self.answer, self.sink, max_pending=max_pending, speaking=lambda: self.playing
        )

    def answer(self, question: str) -> Pipeline:
        if question == "refused":
            raise InvalidInput("that question is refused")
        if question == "broken":
            return Pipeline([_Broken()], UserText(question))
        slow = self.gates[question] = Slow()
        return Pipeline([slow], TextDelta(question), Sentence(question))

    async def sink(self, frame: Frame, question: Any) -> None:
        self.sunk.append((frame, question))

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)


class _Broken(Stage):
    accepts = (UserText,)

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        raise RuntimeError("a bug")
        yield frame  # pragma: no cover  (makes this an async generator)


async def test_the_runner_answers_in_order_and_refuses_a_flood() -> None:
    turns = Turns(max_pending=2)
    turns.runner.ask("one")
    await turns.settle()  # "one" is being answered: two more may wait
    turns.runner.ask("two")
    turns.runner.ask("three")
    with pytest.raises(TooBusy, match="2 questions are already waiting"):
        turns.runner.ask("four")
    for question in ("one", "two", "three"):
        await turns.settle()
        turns.gates[question].release.set()
    await turns.settle()
    said = [(f.text, q) for f, q in turns.sunk if isinstance(f, NoticeFrame)]
    assert said == [("one", "one"), ("two", "two"), ("three", "three")]
    await turns.runner.close()


async def test_failures_become_failure_frames_and_the_runner_goes_on() -> None:
    turns = Turns(max_pending=3)
    for question in ("refused", "broken", "fine"):
        turns.runner.ask(question)
    await turns.settle()
    turns.gates["fine"].release.set()
    await turns.settle()
    failures = [f for f, _ in turns.sunk if isinstance(f, Failure)]
    assert failures == [
        Failure("invalid_input", "that question is refused"),
        Failure("internal", "the answer failed; please ask again"),
    ]
    assert (NoticeFrame("said", "fine"), "fine") in turns.sunk
    await turns.runner.close()


async def test_interrupting_drops_the_waiting_and_cuts_the_answer_after_what_it_sent() -> None:
    turns = Turns()
    turns.runner.ask("long")
    turns.runner.ask("waiting")
    await turns.settle()
    assert turns.runner.busy and turns.runner.answering
    assert await turns.runner.interrupt() is True
    frames = [f for f, _ in turns.sunk]
    assert frames == [TextDelta("long"), Interrupted()]
    assert turns.gates["long"].cancelled == 1
    await turns.settle()
    assert "waiting" not in turns.gates, "the waiting question was dropped"
    assert await turns.runner.interrupt() is False, "nothing left to interrupt"
    await turns.runner.close()


async def test_interrupting_a_student_still_hearing_the_last_answer() -> None:
    turns = Turns()
    turns.runner.ask("short")
    await turns.settle()
    turns.gates["short"].release.set()
    await turns.settle()
    assert not turns.runner.answering
    turns.playing = True  # the client is still playing its audio
    assert turns.runner.busy
    assert await turns.runner.interrupt() is True
    assert turns.sunk[-1] == (Interrupted(), "short")
    await turns.runner.close()


async def test_closing_the_runner_cancels_the_answer_in_flight() -> None:
    turns = Turns()
    turns.runner.ask("held")
    await turns.settle()
    await turns.runner.close()
    assert turns.gates["held"].cancelled == 1
    assert not turns.runner.answering


@pytest.mark.parametrize(
    ("hang_up", "stored"),
    [
        ("sending the answer", ("Hello there.", False)),
        ("after the answer", ("Hello there.", False)),
        ("mid-stream", ("Hel", True)),
    ],
    ids=["sending-the-answer", "after-the-answer", "mid-stream"],
)
async def test_a_student_who_hangs_up_keeps_what_was_said_and_the_stages_stop(
    hang_up: str, stored: tuple[str, bool]
) -> None:
    """The socket closes while a frame is being sent, or just after the answer's text went out
    while its save waits for a worker: the runner is closed then. The answer is stored all the
    same (whole once its text was handed over, else as far as it went) and its voice stage is
    stopped, not left to the GC."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1))
    free = threading.Event()
    busy = loop.run_in_executor(None, free.wait)  # the one worker taken: a save waits its turn
    saved: list[tuple[str, dict[str, Any]]] = []
    voice = Slow()
    pipeline = Pipeline([voice], TextDelta("Hel"), Sentence("Hello there."), AnswerText("Hello there."))
    answer = Answer(pipeline, lambda text, meta: saved.append((text, meta)), Metrics(), lambda _: None)
    sending = asyncio.Event()
    blocks_on = TextDelta if hang_up == "mid-stream" else AnswerText

    async def sink(frame: Frame, question: Any) -> None:
        if isinstance(frame, blocks_on):
            sending.set()
            if hang_up != "after the answer":
                await asyncio.Event().wait()  # a send that never completes: the student has gone

    runner: TurnRunner[str] = TurnRunner(lambda _: answer, sink, max_pending=1)
    runner.ask("hi")
    async with asyncio.timeout(5):
        await sending.wait()
        await voice.started.wait()
        await runner.close()
        free.set()
        await busy
        while len(saved) < 1:
            await asyncio.sleep(0.01)
    assert [(text, bool(meta.get("interrupted"))) for text, meta in saved] == [stored]
    assert voice.cancelled == 1
