"""The Student tab's words in the tutor's language: a Chinese tutor's students read Chinese.

English is the default; a language without a table here reads English. The labels follow the
tutor picked (or the session the student arrived with), so one page can serve both.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.core.media import primary_language

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "tutor": "Tutor",
        "conversation": "Conversation",
        "question": "Ask your tutor…",
        "send": "Send",
        "ask_aloud": "Ask aloud",
        "speak": "Speak the answers",
        "voice": "Tutor's voice",
        "pick_first": "Pick a tutor first.",
        "nobody": "No tutor yet: a teacher creates one in the Teacher tab.",
    },
    "zh": {
        "tutor": "老师",
        "conversation": "对话",
        "question": "向老师提问…",
        "send": "发送",
        "ask_aloud": "语音提问",
        "speak": "朗读回答",
        "voice": "老师的声音",
        "pick_first": "请先选择一位老师。",
        "nobody": "还没有老师：请老师在“Teacher”页创建。",
    },
}


def words(language: str | None) -> dict[str, str]:
    return WORDS.get(primary_language(language), WORDS["en"])


def relabel(language: str | None, chat: list[dict[str, str]]) -> tuple[Any, ...]:
    """Updates for (picker, chat, question, send, microphone, speak, voice) in `language`; the
    chat gets its messages too, as both come from the same event."""
    w = words(language)
    return (
        gr.update(label=w["tutor"]),
        gr.update(value=chat, label=w["conversation"]),
        gr.update(placeholder=w["question"]),
        gr.update(value=w["send"]),
        gr.update(label=w["ask_aloud"]),
        gr.update(label=w["speak"]),
        gr.update(label=w["voice"]),
    )
