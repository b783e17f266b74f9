"""A tutor's prompt: its persona, the course material that grounds the answer, and as much
of the chat's history as the model's context holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.core.engines import ChatMessage, LLMEngine
from app.core.errors import InvalidInput
from kb.service import Passage, describe_source
from tutors.store import Tutor

LANGUAGES = {"zh": "Simplified Chinese", "en": "English"}
NOT_COVERED = {
    "zh": "抱歉，课程资料里没有讲到这个问题。可以换个问法，或者问问老师。",
    "en": "Sorry, the course material doesn't cover that. Try asking another way, or ask your teacher.",
}


@dataclass(frozen=True)
class StoredMessage:
    role: str
    content: str


def system_prompt(tutor: Tutor, passages: list[Passage] | None = None) -> str:
    subject = f" for {tutor.subject}" if tutor.subject else ""
    lines = [f"You are {tutor.name}, a patient tutor{subject}."]
    if tutor.persona:
        lines.append(tutor.persona.strip())
    language = LANGUAGES.get(tutor.language, tutor.language)
    lines.append(f"Answer in {language}. Keep answers short, clear and correct.")
    if passages:
        lines.append("Answer from this course material only, citing passages as [1], [2]:")
        lines += [f"[{n}] ({describe_source(p.source)}) {p.text}" for n, p in enumerate(passages, 1)]
    return "\n".join(lines)


def citations(passages: list[Passage]) -> list[dict[str, Any]]:
    return [{"n": n, **p.source, "snippet": p.text[:240], "score": p.score} for n, p in enumerate(passages, 1)]


# Chat templates wrap every message in a few tokens of their own.
_PER_MESSAGE_TOKENS = 4


def fit_prompt(
    engine: LLMEngine, system: str, history: list[StoredMessage], question: str, reserve: int
) -> list[ChatMessage]:
    """System prompt and question always; then as much recent history as the model's context
    holds, counted in tokens, leaving `reserve` tokens for the answer."""
    head, tail = ChatMessage("system", system), ChatMessage("user", question)
    used = sum(engine.count_tokens(m.content) + _PER_MESSAGE_TOKENS for m in (head, tail))
    budget = engine.context_window - reserve
    if used > budget:
        raise InvalidInput(
            f"the question and the tutor's persona need {used} tokens; "
            f"this model's context holds {budget} besides the answer: shorten the question"
        )
    kept: list[ChatMessage] = []
    for message in reversed(history):
        cost = engine.count_tokens(message.content) + _PER_MESSAGE_TOKENS
        if used + cost > budget:
            break
        kept.append(ChatMessage(message.role, message.content))
        used += cost
    return [head, *reversed(kept), tail]
