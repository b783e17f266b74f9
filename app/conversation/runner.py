"""One session's turns on one transport (a WebSocket, a live call), answered one at a time.

Questions wait in a bounded queue; one more is refused with `TooBusy` instead of piling up.
`interrupt()` is the barge-in: the waiting questions are dropped and the answer in flight is
cut off, its `Interrupted` frame reaching the sink after everything it sent before; when no
answer is running but the student is still hearing the last one (`speaking`), the sink is
sent an `Interrupted` of its own. The sink is the transport: it turns each frame into its
wire. An answer that fails reaches it as a `Failure`, the one place errors become frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Generic, Protocol, TypeVar

from app.conversation.frames import Failure, Frame, Interrupted
from app.core.errors import TooBusy, TutorError

log = logging.getLogger(__name__)

Q = TypeVar("Q")


class Interruptible(Protocol):
    """An answer in flight (`ConversationService.answer`)."""

    def __aiter__(self) -> AsyncGenerator[Frame, None]: ...

    async def interrupt(self) -> None: ...


Sink = Callable[[Frame, Q], Awaitable[None]]  # a frame, and the question it answers


class TurnRunner(Generic[Q]):
    def __init__(
        self,
        answer: Callable[[Q], Interruptible],
        sink: Sink[Q],
        *,
        max_pending: int,
        speaking: Callable[[], bool] = lambda: False,
        name: str = "turns",
    ) -> None:
        self._answer = answer
        self._sink = sink
        self._speaking = speaking  # the student still hears the last answer
        self._name = name
        self._queue: asyncio.Queue[Q] = asyncio.Queue(maxsize=max_pending)
        self._loop: asyncio.Task[None] | None = None
        self._current: tuple[Interruptible, asyncio.Task[None]] | None = None
        self._last: Q | None = None  # the question answered last
        self._cut = False  # the answer in flight has delivered its `Interrupted`

    @property
    def answering(self) -> bool:
        return self._current is not None and not self._current[1].done()

    @property
    def busy(self) -> bool:
        """Answering, or still being heard: the student's speech now is a barge-in."""
        return self.answering or self._speaking()

    def ask(self, question: Q) -> None:
        try:
            self._queue.put_nowait(question)
        except asyncio.QueueFull:
            raise TooBusy(
                f"{self._queue.maxsize} questions are already waiting; wait for the answers before sending more"
            ) from None
        if self._loop is None:
            self._loop = asyncio.create_task(self._answer_each(), name=self._name)

    async def interrupt(self) -> bool:
        """Barge-in. True when there was something to interrupt."""
        while not self._queue.empty():
            self._queue.get_nowait()
        if self.answering:
            assert self._current is not None
            answer, task = self._current
            await answer.interrupt()
            await asyncio.wait({task})  # the old answer ends, its `Interrupted` delivered, first
            if self._cut:
                return True
        if self._speaking():
            await self._deliver(Interrupted(), self._last)
            return True
        return False

    async def close(self) -> None:
        tasks = [t for t in (self._loop, self._current[1] if self._current else None) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _answer_each(self) -> None:
        while True:
            question = await self._queue.get()
            self._last, self._cut = question, False
            try:
                answer = self._answer(question)
            except TutorError as exc:
                await self._deliver(Failure(exc.code, exc.message), question)
                continue
            task = asyncio.create_task(self._play(answer, question), name=f"{self._name}-answer")
            self._current = (answer, task)
            # wait(), not await: a barge-in cuts the answer short, never this loop.
            await asyncio.wait({task})

    async def _play(self, answer: Interruptible, question: Q) -> None:
        try:
            # aclosing: cancelled while delivering (the student hung up), the answer still ends
            # now, its stages stopped and what it said stored, not when the GC gets to it.
            async with aclosing(aiter(answer)) as frames:
                async for frame in frames:
                    await self._deliver(frame, question)
        except TutorError as exc:
            await self._deliver(Failure(exc.code, exc.message), question)
        except Exception:
            log.exception("an answer failed (%s)", self._name)
            await self._deliver(Failure("internal", "the answer failed; please ask again"), question)

    async def _deliver(self, frame: Frame, question: Q | None) -> None:
        if isinstance(frame, Interrupted):
            self._cut = True
        await self._sink(frame, question)  # type: ignore[arg-type]
