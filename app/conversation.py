"""One student turn, end to end: check the input, build the tutor's prompt from its persona and
this chat's history, run the pipeline, and keep the transcript.

Transports (WebSocket, Gradio, WebRTC later) call `answer()` and only translate frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select

from app.db import Database, MessageRow, utcnow
from app.engines import EngineHub
from app.errors import EngineUnavailable, InvalidInput
from app.pipeline import (
    AnswerText,
    Frame,
    LLMRequest,
    SpeechIn,
    Stage,
    TextDelta,
    TurnStarted,
    UserText,
    asr_stage,
    lipsync_stage,
    llm_stage,
    run_pipeline,
    sentence_stage,
    tts_stage,
)
from app.sessions import SessionInfo
from app.settings import Settings
from app.speech.tts import Voice
from avatars.service import Avatars
from kb.service import KnowledgeBases, Passage, describe_source
from tutors.llm import ChatMessage, GenerationOptions, LLMEngine
from tutors.store import Tutor, TutorStore

log = logging.getLogger(__name__)

_MESSAGES = MessageRow.__table__
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


class ConversationService:
    def __init__(
        self,
        db: Database,
        tutors: TutorStore,
        hub: EngineHub,
        kbs: KnowledgeBases,
        avatars: Avatars,
        settings: Settings,
    ) -> None:
        self._avatars = avatars
        self._db = db
        self._tutors = tutors
        self._hub = hub
        self._kbs = kbs
        self._settings = settings

    def engine(self, stage: str) -> Any:
        return self._hub.get(stage)

    # Core queries, not the ORM, in as few transactions as possible: these run on every turn.
    def history(self, session_id: str, chat_id: str, limit: int | None = None) -> list[StoredMessage]:
        with self._db.transaction() as db:
            return self._history(db, session_id, chat_id, limit)

    def _history(self, db: Connection, session_id: str, chat_id: str, limit: int | None) -> list[StoredMessage]:
        query = (
            select(_MESSAGES.c.role, _MESSAGES.c.content)
            .where(_MESSAGES.c.session_id == session_id, _MESSAGES.c.chat_id == chat_id)
            .order_by(_MESSAGES.c.id.desc())
            .limit(limit)
        )
        return [StoredMessage(r.role, r.content) for r in reversed(db.execute(query).all())]

    def _save(self, session_id: str, chat_id: str, role: str, content: str, meta: dict | None = None) -> None:
        with self._db.transaction() as db:
            self._insert(db, session_id, chat_id, role, content, meta)

    @staticmethod
    def _insert(db: Connection, session_id: str, chat_id: str, role: str, content: str, meta: dict | None) -> None:
        values = {"session_id": session_id, "chat_id": chat_id, "role": role, "content": content}
        db.execute(insert(_MESSAGES).values(**values, meta=meta or {}, created_at=utcnow()))

    def check_text(self, text: object) -> str:
        if not isinstance(text, str):
            raise InvalidInput("`content` must be a string for a text message")
        text = text.strip()
        if not text:
            raise InvalidInput("`content` is empty: send the student's question")
        if len(text) > self._settings.max_text_chars:
            raise InvalidInput(f"`content` is longer than {self._settings.max_text_chars} characters")
        return text

    def _begin_turn(self, session: SessionInfo, chat_id: str, question: UserText) -> list[Frame]:
        """Read what the turn needs, retrieve its material, store the student's message and
        build the prompt: one trip off the loop, one transaction.

        A tutor with knowledge bases answers from them; when nothing relevant is found it
        says so, without asking the model (which would invent an answer)."""
        limit = self._settings.history_max_messages
        text = question.text
        with self._db.transaction() as db:
            tutor = self._tutors.get(session.tutor_id, db)
            avatar = self._avatars.frames(tutor.avatar_id) if self._settings.enable_avatar else None
            started = TurnStarted(Voice.resolve(tutor.voice or self._settings.tts_voice, tutor.language), avatar)
            named = [*tutor.kb_ids, *([session.kb_id] if session.kb_id else [])]
            kb_ids = self._kbs.existing(list(dict.fromkeys(named))) if named else []
            passages = self._kbs.search(kb_ids, text, self._settings.kb_top_k) if kb_ids else []
            if kb_ids and not passages:
                self._insert(db, session.id, chat_id, "user", text, question.meta)
                return [started, AnswerText(NOT_COVERED.get(tutor.language, NOT_COVERED["en"]), engine="grounding")]
            history = self._history(db, session.id, chat_id, limit) if limit else []
            options = GenerationOptions(
                model=self._settings.llm_model_for(tutor.id, tutor.llm_model),
                temperature=tutor.temperature if tutor.temperature is not None else self._settings.llm_temperature,
                max_tokens=self._settings.llm_max_tokens,
            )
            # Before the insert: a question that cannot fit is refused without a trace.
            system = system_prompt(tutor, passages)
            messages = fit_prompt(self._hub.get("llm"), system, history, text, options.max_tokens)
            self._insert(db, session.id, chat_id, "user", text, question.meta)
        return [started, LLMRequest(messages, options, citations(passages))]

    def _turn_stage(self, session: SessionInfo, chat_id: str) -> Stage:
        async def run(upstream: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
            async for frame in upstream:
                if not isinstance(frame, UserText):
                    yield frame
                    continue
                question = UserText(self.check_text(frame.text), frame.meta)
                for begun in await asyncio.to_thread(self._begin_turn, session, chat_id, question):
                    yield begun

        return run

    async def listening_language(self, session: SessionInfo) -> str | None:
        """What the recogniser listens for in this session (None: detect)."""
        if not self._settings.enable_asr:
            raise EngineUnavailable("speech input is turned off on this server (ENABLE_ASR=false); send text")
        tutor = await asyncio.to_thread(self._tutors.get, session.tutor_id)
        return self._settings.asr_language_for(tutor.language)

    async def answer(
        self,
        session: SessionInfo,
        chat_id: str,
        question: str | SpeechIn,
        *,
        speak: bool = False,
        animate: bool = True,
    ) -> AsyncIterator[Frame]:
        """One turn. A spoken question (16 kHz) is transcribed first; with `speak` the answer
        is voiced sentence by sentence as it streams, and with `animate` also lip-synced as
        MP4 segments (a WebRTC call animates the avatar itself, frame by frame)."""
        if isinstance(question, SpeechIn):
            first: Frame = question
            settings = self._settings
            listen = asr_stage(
                self._hub.get("asr"),
                self._hub.get("vad"),
                await self.listening_language(session),
                threshold=settings.vad_threshold,
                min_speech=settings.vad_min_speech_ms / 1000,
            )
            stages = [listen]
        else:
            first, stages = UserText(self.check_text(question)), []
        stages += [self._turn_stage(session, chat_id), llm_stage(self._hub.get("llm"))]
        if speak and self._settings.enable_tts:
            stages += [sentence_stage(self._settings.tts_max_sentence_chars), tts_stage(self._hub.get("tts"))]
            if animate and self._settings.enable_avatar:
                stages.append(lipsync_stage(self._hub.get("lipsync")))
        answered = False
        partial: list[str] = []
        try:
            async for frame in run_pipeline(stages, first):
                if isinstance(frame, TextDelta):
                    partial.append(frame.text)
                yield frame
                if isinstance(frame, AnswerText):
                    # Stored after the student has it: the write never delays the answer.
                    meta = {
                        "first_token_ms": frame.first_token_ms,
                        "total_ms": frame.total_ms,
                        "engine": frame.engine,
                        "model": frame.model,
                        "sources": frame.sources,
                    }
                    # Set first: the executor runs the save even if this task is cancelled
                    # while awaiting it (the student hung up), and the finally must not save twice.
                    answered = True
                    await asyncio.to_thread(self._save, session.id, chat_id, "assistant", frame.text, meta)
        finally:
            if not answered and partial:
                # Interrupted mid-answer: keep what the student saw, marked as cut off. A quick
                # local insert; awaiting a thread here would race the cancellation in progress.
                self._save(session.id, chat_id, "assistant", "".join(partial).strip(), {"interrupted": True})
