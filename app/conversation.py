"""One student turn, end to end: check the input, build the tutor's prompt from its persona and
this chat's history, run the pipeline, and keep the transcript.

Transports (WebSocket, Gradio, WebRTC later) call `answer()` and only translate frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import select

from app.db import Database, MessageRow
from app.engines import EngineHub
from app.errors import InvalidInput
from app.pipeline import AnswerText, Frame, LLMRequest, TextDelta, llm_stage, run_pipeline
from app.sessions import SessionInfo
from app.settings import Settings
from tutors.llm import ChatMessage, GenerationOptions
from tutors.store import Tutor, TutorStore

log = logging.getLogger(__name__)

LANGUAGES = {"zh": "Simplified Chinese", "en": "English"}


@dataclass(frozen=True)
class StoredMessage:
    role: str
    content: str


def system_prompt(tutor: Tutor) -> str:
    subject = f" for {tutor.subject}" if tutor.subject else ""
    lines = [f"You are {tutor.name}, a patient tutor{subject}."]
    if tutor.persona:
        lines.append(tutor.persona.strip())
    language = LANGUAGES.get(tutor.language, tutor.language)
    lines.append(f"Answer in {language}. Keep answers short, clear and correct.")
    return "\n".join(lines)


class ConversationService:
    def __init__(self, db: Database, tutors: TutorStore, hub: EngineHub, settings: Settings) -> None:
        self._db = db
        self._tutors = tutors
        self._hub = hub
        self._settings = settings

    def history(self, session_id: str, chat_id: str, limit: int | None = None) -> list[StoredMessage]:
        with self._db.session() as db:
            query = (
                select(MessageRow)
                .where(MessageRow.session_id == session_id, MessageRow.chat_id == chat_id)
                .order_by(MessageRow.id.desc())
            )
            if limit is not None:
                query = query.limit(limit)
            rows = list(db.scalars(query))
        return [StoredMessage(r.role, r.content) for r in reversed(rows)]

    def _save(self, session_id: str, chat_id: str, role: str, content: str, meta: dict | None = None) -> None:
        with self._db.session() as db:
            db.add(MessageRow(session_id=session_id, chat_id=chat_id, role=role, content=content, meta=meta or {}))

    def check_text(self, text: object) -> str:
        if not isinstance(text, str):
            raise InvalidInput("`content` must be a string for a text message")
        text = text.strip()
        if not text:
            raise InvalidInput("`content` is empty: send the student's question")
        if len(text) > self._settings.max_text_chars:
            raise InvalidInput(f"`content` is longer than {self._settings.max_text_chars} characters")
        return text

    def _begin_turn(self, session: SessionInfo, chat_id: str, text: str) -> tuple[Tutor, list[StoredMessage]]:
        """Everything a turn reads and the student's message written: one trip off the loop."""
        tutor = self._tutors.get(session.tutor_id)
        limit = self._settings.history_max_messages
        history = self.history(session.id, chat_id, limit) if limit else []
        self._save(session.id, chat_id, "user", text)
        return tutor, history

    async def answer(self, session: SessionInfo, chat_id: str, text: str) -> AsyncIterator[Frame]:
        text = self.check_text(text)
        tutor, history = await asyncio.to_thread(self._begin_turn, session, chat_id, text)

        messages = [ChatMessage("system", system_prompt(tutor))]
        messages += [ChatMessage(m.role, m.content) for m in history]
        messages.append(ChatMessage("user", text))
        options = GenerationOptions(
            model=tutor.llm_model,
            temperature=tutor.temperature if tutor.temperature is not None else self._settings.llm_temperature,
            max_tokens=self._settings.llm_max_tokens,
        )
        stages = [llm_stage(self._hub.get("llm"))]
        answered = False
        partial: list[str] = []
        try:
            async for frame in run_pipeline(stages, LLMRequest(messages, options)):
                if isinstance(frame, AnswerText):
                    meta = {"first_token_ms": frame.first_token_ms, "total_ms": frame.total_ms}
                    await asyncio.to_thread(self._save, session.id, chat_id, "assistant", frame.text, meta)
                    answered = True
                elif isinstance(frame, TextDelta):
                    partial.append(frame.text)
                yield frame
        finally:
            if not answered and partial:
                # Interrupted mid-answer: keep what the student saw, marked as cut off. A quick
                # local insert; awaiting a thread here would race the cancellation in progress.
                self._save(session.id, chat_id, "assistant", "".join(partial).strip(), {"interrupted": True})
