"""Ollama first, the embedded model when Ollama cannot be reached — visibly.

A turn whose primary cannot be reached before its first token is answered by the fallback
and begins with a `Notice`, so the student knows the answer comes from the offline model.
While the primary is down, turns go straight to the fallback (no connect wait), and every
`probe_seconds` a turn first checks whether the primary is back. A primary that dies
mid-answer ends that turn with an error; the next turn falls back at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from app.core.engines import ChatMessage, Composite, GenerationOptions, LLMEngine, Notice, Outage
from app.core.errors import BackendDown, EngineUnavailable

FALLBACK_NOTICE = "The tutor's main model is unreachable; this answer comes from the offline model."


class FallbackLLM(Composite):
    def __init__(self, primary: LLMEngine, fallback: LLMEngine, *, probe_seconds: float) -> None:
        self.primary = primary
        self.fallback = fallback
        self.outage = Outage(probe_seconds)

    @property
    def fallback_active(self) -> bool:  # type: ignore[override]
        return self.outage.active

    @property
    def status_detail(self) -> str:
        if not self.outage.active:
            return ""
        return f"{self.outage.reason}; answering with {self.fallback.name} ({self.fallback.description})"

    @property
    def context_window(self) -> int:
        return self._current.context_window

    def count_tokens(self, text: str) -> int:
        return self._current.count_tokens(text)

    def warmup(self) -> None:
        # The fallback is warmed too, so switching to it costs no model load mid-conversation.
        self.fallback.warmup()
        try:
            self.primary.warmup()
        except BackendDown as exc:
            self.outage.down(exc)
        else:
            self.outage.up()

    async def prepare(self, messages: list[ChatMessage]) -> None:
        await self._current.prepare(messages)

    async def _primary_back(self) -> bool:
        if not self.outage.retry_due():
            return False
        try:
            await self.primary.ping()  # type: ignore[attr-defined]
        except BackendDown as exc:
            self.outage.down(exc)
            return False
        self.outage.up()
        return True

    async def stream(self, messages: list[ChatMessage], options: GenerationOptions) -> AsyncIterator[str | Notice]:
        if not self.fallback_active or await self._primary_back():
            started = False
            try:
                async with aclosing(self.primary.stream(messages, options)) as stream:
                    async for piece in stream:
                        started = True
                        yield piece
                return
            except BackendDown as exc:
                self.outage.down(exc)
                if started:
                    raise EngineUnavailable(
                        "the tutor's model stopped mid-answer; ask again and the offline model will answer"
                    ) from exc
        yield Notice("llm_fallback", FALLBACK_NOTICE)
        # aclosing: a barge-in must stop the inner engine now, not when the GC gets to it.
        async with aclosing(self.fallback.stream(messages, options)) as stream:
            async for piece in stream:
                yield piece
