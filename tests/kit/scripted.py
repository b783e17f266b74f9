"""A scripted LLM engine for tests and benchmarks: instant, deterministic, and revealing.

Its answer names the tutor it was prompted as and how many earlier turns it saw, so tests can
check isolation between tutors and chats through the real transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from app.core.engines import ChatMessage, GenerationOptions


class ScriptedLLM:
    name = "scripted"
    description = "scripted test engine"
    context_window = 100_000

    def __init__(self, delay: float = 0.0, pieces: int = 3) -> None:
        self.delay = delay
        self.pieces = pieces
        self.cancelled = 0
        self.calls: list[list[ChatMessage]] = []

    def warmup(self) -> None:
        pass

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    async def prepare(self, messages: list[ChatMessage]) -> None:
        pass  # nothing to keep warm

    def reply_for(self, messages: list[ChatMessage]) -> str:
        system = messages[0].content
        tutor = system.split(",", 1)[0].removeprefix("You are ")
        earlier = sum(1 for m in messages[1:-1] if m.role == "user")
        return f"[{tutor}|{earlier}] {messages[-1].content}"

    async def stream(self, messages: list[ChatMessage], options: GenerationOptions) -> AsyncIterator[str]:
        self.calls.append(messages)
        text = self.reply_for(messages)
        step = max(1, -(-len(text) // self.pieces))
        try:
            for i in range(0, len(text), step):
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield text[i : i + step]
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise
