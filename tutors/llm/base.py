"""The LLM stage's interface: chat messages in, a stream of text pieces out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from app.errors import EngineUnavailable


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class GenerationOptions:
    model: str | None
    temperature: float
    max_tokens: int


@dataclass(frozen=True)
class Notice:
    """Not part of the answer: something the student should know about it (e.g. a fallback)."""

    code: str
    text: str


class BackendDown(EngineUnavailable):
    """The engine's server cannot be reached; a composite engine may fall back."""

    code = "llm_unreachable"


class LLMEngine(Protocol):
    name: str
    description: str
    context_window: int

    def warmup(self) -> None:
        """Load weights or check the server; blocking, called off the event loop."""

    def count_tokens(self, text: str) -> int:
        """Tokens `text` costs in the prompt: exact where the tokenizer is at hand."""

    def stream(self, messages: list[ChatMessage], options: GenerationOptions) -> AsyncIterator[str | Notice]:
        """Yield the answer piece by piece; closing the iterator cancels generation."""


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate for remote models: CJK characters are about a token each,
    other text about three characters a token (English averages nearer four: this errs high,
    so a trimmed prompt still fits)."""
    cjk = sum(
        1 for ch in text if "\u2e80" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" or "\uf900" <= ch <= "\ufaff"
    )
    return cjk + -(-(len(text) - cjk) // 3) + 4
