"""The real-time path: a chain of async stages passing typed frames.

Each stage takes the stream of frames from the stage before it and yields frames for the next;
a stage passes through what it does not handle. Cancelling the task that drains the pipeline
(barge-in, a closed socket, an ended session) closes every stage's generator, so each stage
drops what it holds and stops its engine.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tutors.llm import ChatMessage, GenerationOptions, LLMEngine, Notice


@dataclass(frozen=True)
class Frame:
    pass


@dataclass(frozen=True)
class LLMRequest(Frame):
    """A prompt ready for the model: persona, history and the student's words."""

    messages: list[ChatMessage]
    options: GenerationOptions
    sources: list[dict[str, Any]] = field(default_factory=list)  # what grounds the answer, cited


@dataclass(frozen=True)
class TextDelta(Frame):
    text: str


@dataclass(frozen=True)
class NoticeFrame(Frame):
    """Something the student should know about the answer, outside the answer itself."""

    code: str
    text: str


@dataclass(frozen=True)
class AnswerText(Frame):
    """The whole answer, once: what is stored, shown and cited."""

    text: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    first_token_ms: float | None = None
    total_ms: float | None = None
    engine: str = ""


Stage = Callable[[AsyncIterator[Frame]], AsyncIterator[Frame]]


def llm_stage(engine: LLMEngine) -> Stage:
    async def run(upstream: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        async for frame in upstream:
            if not isinstance(frame, LLMRequest):
                yield frame
                continue
            started = time.perf_counter()
            first: float | None = None
            parts: list[str] = []
            stream = engine.stream(frame.messages, frame.options)
            try:
                async for piece in stream:
                    if isinstance(piece, Notice):
                        yield NoticeFrame(piece.code, piece.text)
                        continue
                    if not piece:
                        continue
                    if first is None:
                        first = time.perf_counter()
                    parts.append(piece)
                    yield TextDelta(piece)
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
            yield AnswerText(
                "".join(parts).strip(),
                sources=frame.sources,
                first_token_ms=None if first is None else (first - started) * 1000,
                total_ms=(time.perf_counter() - started) * 1000,
                engine=engine.name,  # after the stream: names the fallback if one answered
            )

    return run


async def _source(frames: Sequence[Frame]) -> AsyncIterator[Frame]:
    for frame in frames:
        yield frame


def run_pipeline(stages: Sequence[Stage], *frames: Frame) -> AsyncIterator[Frame]:
    stream: AsyncIterator[Frame] = _source(frames)
    for stage in stages:
        stream = stage(stream)
    return stream
