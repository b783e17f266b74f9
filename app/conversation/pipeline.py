"""The real-time path: a chain of stages passing typed frames, each stage in a task of its own.

A stage handles the frames it `accepts` and lets every other frame flow past, in order. A
`background` stage handles its frames in a second task while everything else flows on at
once, so the text never waits for the voice and the voice never waits for the video.

A barge-in is a frame too. `Pipeline.interrupt()` stops every stage's work in flight, drops
whatever waits between the stages, and hands an `Interrupted` frame to every stage in order
and then to the consumer: nothing of the cut-off answer comes after it. An error in a stage
reaches the consumer after the frames that stage sent before it, and stops the pipeline; so
does the consumer's going away (a closed socket, an ended session): every stage's task is
cancelled, which closes its engine's stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any, ClassVar

from app.conversation.frames import Frame, Interrupted

_END = object()  # the end of the input: it follows every frame sent before it


class Stage:
    """One link of the chain. A new one is made for each turn, so it may keep state."""

    accepts: ClassVar[tuple[type[Frame], ...]] = ()
    background: ClassVar[bool] = False
    passthrough: ClassVar[bool] = False  # background only: accepted frames also flow on at once

    def observe(self, frame: Frame) -> None:
        """Every frame that reaches this stage, in order, as it arrives (interruptions too)."""

    def process(self, frame: Frame) -> AsyncIterator[Frame]:
        """One accepted frame → the frames it becomes."""
        raise NotImplementedError


class _Link:
    """A stage at work: its inbox and the task(s) that empty it into the next link."""

    def __init__(self, stage: Stage, emit: Callable[[Any], None]) -> None:
        self.stage = stage
        self.emit = emit
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        name = type(self.stage).__name__
        if not self.stage.background:
            self.tasks = [asyncio.create_task(self._work(self.inbox, sees=True), name=name)]
            return
        todo: asyncio.Queue[Any] = asyncio.Queue()
        self.tasks = [
            asyncio.create_task(self._sort(todo), name=f"{name}-in"),
            asyncio.create_task(self._work(todo, sees=False), name=name),
        ]

    async def _sort(self, todo: asyncio.Queue[Any]) -> None:
        """A background stage's inbox: its own frames to the worker, the rest on at once."""
        stage = self.stage
        try:
            while (item := await self.inbox.get()) is not _END:
                if isinstance(item, Frame):
                    stage.observe(item)
                    if isinstance(item, stage.accepts):
                        todo.put_nowait(item)
                        if not stage.passthrough:
                            continue
                self.emit(item)  # a frame, or an error from upstream: on at once, in order
        finally:
            todo.put_nowait(_END)

    async def _work(self, queue: asyncio.Queue[Any], *, sees: bool) -> None:
        stage = self.stage
        try:
            while (item := await queue.get()) is not _END:
                if sees and isinstance(item, Frame):
                    stage.observe(item)
                if isinstance(item, stage.accepts):
                    async for out in stage.process(item):
                        self.emit(out)
                else:
                    self.emit(item)
        except Exception as exc:  # raised to the consumer after what this stage sent before
            self.emit(exc)
        self.emit(_END)


class Pipeline:
    """One turn through `stages`, starting from `frames`: iterate it for what comes out."""

    def __init__(self, stages: Sequence[Stage], *frames: Frame) -> None:
        self._out: asyncio.Queue[Any] = asyncio.Queue()
        self._links: list[_Link] = []
        emit: Callable[[Any], None] = self._out.put_nowait
        for stage in reversed(stages):
            self._links.insert(0, _Link(stage, emit))
            emit = self._links[0].inbox.put_nowait
        for frame in frames:
            emit(frame)
        emit(_END)
        self.interrupted = False

    async def __aiter__(self) -> AsyncGenerator[Frame, None]:
        if not self.interrupted:
            for link in self._links:
                link.start()
        try:
            while (item := await self._out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            await self._stop()

    async def interrupt(self) -> None:
        """Barge-in: stop every stage, drop what is in flight, and end with `Interrupted`."""
        if self.interrupted:
            return
        self.interrupted = True
        await self._stop()
        while not self._out.empty():
            self._out.get_nowait()
        frame = Interrupted()
        for link in self._links:
            link.stage.observe(frame)
        self._out.put_nowait(frame)
        self._out.put_nowait(_END)

    async def _stop(self) -> None:
        tasks = [task for link in self._links for task in link.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
