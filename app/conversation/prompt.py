"""A tutor's prompt: its persona, the evidence from the course material that the answer must
rest on, and as much of the chat's history as the model's context holds.

A prompt always fits: history goes first, then the material is trimmed, then the question
itself (a 4,000-character question is answered from what fits, never refused for its length).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.conversation.language import HAN_LANGUAGES
from app.core.engines import ChatMessage, LLMEngine
from app.core.media import primary_language, writes_traditional
from kb.grounding import Evidence
from kb.passages import describe_source
from tutors.store import Tutor

LANGUAGES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "ja": "Japanese", "ko": "Korean"}
NOT_COVERED = {
    "zh": "抱歉，课程资料里没有讲到这个问题。可以换个问法，或者问问老师。",
    "zh-hant": "抱歉，課程資料裡沒有講到這個問題。可以換個問法，或者問問老師。",
    "en": "Sorry, the course material doesn't cover that. Try asking another way, or ask your teacher.",
}
# Before more of the material, to a request about the last answer ("再解释一下").
MORE = {"zh": "课程资料里还讲到：", "zh-hant": "課程資料裡還講到：", "en": "Here is more from the notes: "}
ALL_SAID = {  # where the notes have nothing more on it
    "zh": "关于这一点，课程资料里就讲了这些。可以问问别的，或者问问老师。",
    "zh-hant": "關於這一點，課程資料裡就講了這些。可以問問別的，或者問問老師。",
    "en": "That is all the notes say about it. Ask me something else, or ask your teacher.",
}
# What a tutor says when the model answered in another language than the tutor's.
OFF_LANGUAGE = {
    "zh": "抱歉，这个问题我没能用中文回答好。可以换个问法再问一次，或者问问老师。",
    "zh-hant": "抱歉，這個問題我沒能用中文回答好。可以換個問法再問一次，或者問問老師。",
    "en": "Sorry, I couldn't answer that properly. Try asking another way, or ask your teacher.",
}


def _chinese_script(language: str) -> str | None:
    """The `table` key of a language written in Chinese characters: `zh-hant` (Cantonese too)
    or `zh`; None for any other language."""
    primary = primary_language(language)
    if primary not in HAN_LANGUAGES:
        return None
    return "zh-hant" if writes_traditional(language) or primary == "yue" else "zh"


def said(table: dict[str, str], language: str) -> str:
    """A tutor's set phrase in its language (Chinese in its script), English where there is none."""
    return table.get(_chinese_script(language) or primary_language(language), table["en"])


def _language_lines(language: str) -> list[str]:
    """How the prompt asks for the tutor's language: in English, and for Chinese in Chinese
    too (a small model follows an instruction written in the language it is to use better)."""
    script = _chinese_script(language)
    if script is None:
        return [f"Answer in {LANGUAGES.get(primary_language(language), language)}."]
    if script == "zh-hant":
        return ["Answer in Traditional Chinese.", "請只用繁體中文回答。"]
    return ["Answer in Simplified Chinese.", "请只用简体中文回答。"]


@dataclass(frozen=True)
class StoredMessage:
    role: str
    content: str


def system_prompt(tutor: Tutor, evidence: list[Evidence] | None = None) -> str:
    subject = f" for {tutor.subject}" if tutor.subject else ""
    lines = [f"You are {tutor.name}, a patient tutor{subject}."]
    if tutor.persona:
        lines.append(tutor.persona.strip())
    lines += [*_language_lines(tutor.language), "Keep answers short, clear and correct."]
    if evidence:
        lines.append(
            "Answer in one or two sentences, saying only what this course material says "
            "(cite it as [1]); add nothing it does not say:"
        )
        lines += [f"[{n}] ({describe_source(e.passage.source)}) {e.text}" for n, e in enumerate(evidence, 1)]
    return "\n".join(lines)


# Chat templates wrap every message in a few tokens of their own.
_PER_MESSAGE_TOKENS = 4


def _clip(engine: LLMEngine, text: str, budget: int) -> str:
    """The longest head of `text` that costs at most `budget` tokens."""
    if engine.count_tokens(text) <= budget:
        return text
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if engine.count_tokens(text[:middle]) <= budget - 2:  # room for the "…"
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + "…"


def fit_prompt(
    engine: LLMEngine, system: str, history: list[StoredMessage], question: str, reserve: int
) -> list[ChatMessage]:
    """System prompt and question always; then as much recent history as the model's context
    holds, counted in tokens, leaving `reserve` tokens for the answer. When the system prompt
    and the question alone are too long, the system prompt's end (the material) is clipped to
    half the room, then the question to what is left."""
    budget = engine.context_window - reserve
    room = budget - 2 * _PER_MESSAGE_TOKENS  # for the system prompt and the question
    if engine.count_tokens(system) + engine.count_tokens(question) > room:
        system = _clip(engine, system, max(room // 2, room - engine.count_tokens(question)))
        question = _clip(engine, question, room - engine.count_tokens(system))
    head, tail = ChatMessage("system", system), ChatMessage("user", question)
    used = sum(engine.count_tokens(m.content) + _PER_MESSAGE_TOKENS for m in (head, tail))
    kept: list[ChatMessage] = []
    for message in reversed(history):
        cost = engine.count_tokens(message.content) + _PER_MESSAGE_TOKENS
        if used + cost > budget:
            break
        kept.append(ChatMessage(message.role, message.content))
        used += cost
    return [head, *reversed(kept), tail]
