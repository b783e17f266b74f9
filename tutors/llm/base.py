"""The LLM stage's interface: chat messages in, a stream of text pieces out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class GenerationOptions:
    model: str | None
    temperature: float
    max_tokens: int


class LLMEngine(Protocol):
    name: str
    description: str

    def warmup(self) -> None:
        """Load weights or check the server; blocking, called off the event loop."""

    def stream(self, messages: list[ChatMessage], options: GenerationOptions) -> AsyncIterator[str]:
        """Yield the answer piece by piece; closing the iterator cancels generation."""
