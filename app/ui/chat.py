"""How a turn's frames appear in the Student tab's chat: the UI's one frame → screen table,
for typed, recorded and live-call turns alike."""

from __future__ import annotations

from typing import Any

from app.conversation.frames import (
    AnswerText,
    Failure,
    Frame,
    Interrupted,
    NoticeFrame,
    TextDelta,
    Transcription,
    UserText,
)
from kb.passages import describe_source

Chat = list[dict[str, str]]
THINKING = {"role": "assistant", "content": "…"}  # a recording sent, its transcript not back yet


def cited(sources: list[dict[str, Any]]) -> str:
    if not sources:
        return ""
    return "\n\n**Sources:** " + " · ".join(f"[{s['n']}] {describe_source(s)}" for s in sources)


def show(frame: Frame, history: Chat) -> bool:
    """One frame shown in the chat (changed in place); False if it shows nothing."""
    if isinstance(frame, UserText):  # typed during a live call: the call answers it
        history += [{"role": "user", "content": frame.text}, {"role": "assistant", "content": ""}]
    elif isinstance(frame, Transcription):
        heard = frame.text or "(nothing was heard)"
        if history and history[-1] == THINKING:
            history.pop()
        history += [{"role": "user", "content": f"🎤 {heard}"}, {"role": "assistant", "content": ""}]
    elif isinstance(frame, NoticeFrame):
        history.insert(-1, {"role": "assistant", "content": f"ⓘ {frame.text}"})
    elif isinstance(frame, Failure):
        history.append({"role": "assistant", "content": f"⚠ {frame.text}"})
    elif isinstance(frame, Interrupted):
        history.append({"role": "assistant", "content": "ⓘ (interrupted)"})
    elif isinstance(frame, TextDelta):
        history[-1]["content"] += frame.text
    elif isinstance(frame, AnswerText):
        history[-1]["content"] = frame.text + cited(frame.sources)
    else:
        return False
    return True
