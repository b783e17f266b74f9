"""One student turn, end to end: check the input, build the tutor's prompt from its persona and
this chat's history, run the pipeline, and keep the transcript.

Transports (the WebSocket, a live call, the Student tab) ask `answer()` for a turn and only
translate its frames to their wire.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, insert, select

from app.conversation import talk
from app.conversation.frames import (
    AnswerText,
    AudioOut,
    Frame,
    Grounded,
    Interrupted,
    LLMRequest,
    NoticeFrame,
    SpeechIn,
    TextDelta,
    Transcription,
    TurnStarted,
    UserText,
    VideoOut,
)
from app.conversation.pipeline import Pipeline, Stage
from app.conversation.prompt import NOT_COVERED, StoredMessage, fit_prompt, said, system_prompt
from app.conversation.sessions import SessionInfo
from app.conversation.stages import Animate, Begin, Check, Generate, KeepLanguage, Recognise, Sentences, Speak
from app.core.db import Database, MessageRow, SessionRow, utcnow
from app.core.engines import ASR, VAD, ChatMessage, Engines, GenerationOptions, ListenFor, TurnEnd
from app.core.errors import EngineUnavailable, InvalidInput
from app.core.media import Speech, Voice, primary_language, writes_traditional
from app.core.metrics import Metrics
from app.core.settings import Settings
from app.speech.sentences import first_spoken
from avatars.service import Avatars
from kb.grounding import Grounding
from kb.service import KnowledgeBases
from tutors.store import Tutor, TutorStore

_MESSAGES = MessageRow.__table__
_SESSIONS = SessionRow.__table__
Store = Callable[[str, dict[str, Any]], None]  # (what the tutor said, its meta) → the transcript

log = logging.getLogger(__name__)
FORESIGHT_SECONDS = 30.0  # a held turn's foreseen answer is dropped after this
FORESIGHT_WAIT_SECONDS = 2.0  # for the search begun ahead, rather than search again beside it
TOPIC_EXCHANGES = 3  # a follow-up is read about the topic of the last three (`talk.last_topic`)
MORE_EXCHANGES = 10  # "tell me more" leaves out what the chat's last ten answers quoted


def consume(future: asyncio.Future[Any]) -> None:
    """A done-callback for speculative work nobody may await (an early guess, a sentence
    spoken ahead): its error is seen here, not logged as never retrieved; whoever does await
    it handles it (a sentence spoken ahead that failed is spoken again by its turn)."""
    if not future.cancelled():
        future.exception()


@dataclass
class _Foreseen:
    """An answer begun while its turn was held: for the turn that ends on these words. The
    turn may end before the material has been searched (the hold is short), and then waits for
    it (`grounded`); the first sentence's speech is a task the voice stage awaits."""

    text: str
    chat_id: str  # the chat it was read in: a follow-up reads after that chat's answers
    grounding: Grounding | None = None
    voice: Voice | None = None
    spoken: dict[str, asyncio.Future[Speech]] = field(default_factory=dict)
    grounded: threading.Event = field(default_factory=threading.Event)
    at: float = field(default_factory=time.monotonic)


class Answer:
    """One turn in flight. Iterate it for its frames; `interrupt()` cuts it off (barge-in).

    The answer is stored once the student has it; an answer cut off (interrupted, or its
    student gone) is stored as far as the student saw it, marked `interrupted`."""

    def __init__(self, pipeline: Pipeline, store: Store, metrics: Metrics, in_flight: Callable[[int], None]) -> None:
        self._pipeline = pipeline
        self._store = store
        self._metrics = metrics
        self._in_flight = in_flight

    async def interrupt(self) -> None:
        await self._pipeline.interrupt()

    def _measure(self, frame: Frame) -> None:
        metrics = self._metrics
        if isinstance(frame, NoticeFrame) and frame.code.endswith("_fallback"):
            metrics.fallbacks.labels(frame.code).inc()
        elif (measured := _LATENCY.get(type(frame))) and (ms := getattr(frame, measured[1])):
            metrics.stage_seconds.labels(measured[0]).observe(ms / 1000)

    async def __aiter__(self) -> AsyncGenerator[Frame, None]:
        answered = False
        outcome = "abandoned"  # until it ends otherwise: the student went away mid-answer
        partial: list[str] = []
        saved: asyncio.Future[None] | None = None
        self._in_flight(+1)
        try:
            # aclosing: a hang-up cancels the consumer while it delivers a frame, and the stages
            # (voice, lip-sync) must stop then, not when the GC finds this generator.
            async with aclosing(aiter(self._pipeline)) as frames:
                async for frame in frames:
                    self._measure(frame)
                    if isinstance(frame, TextDelta):
                        partial.append(frame.text)
                    elif isinstance(frame, Interrupted):
                        outcome = "interrupted"
                    elif isinstance(frame, AnswerText):
                        # Saved in the executor while it is handed over, and shielded: a student
                        # who hangs up as the text arrives cancels this generator at its yield or
                        # its await, and a save cancelled before a worker took it would never run
                        # (and the finally must not save the answer twice).
                        answered, outcome = True, "answered"
                        saved = asyncio.get_running_loop().run_in_executor(
                            None, self._store, frame.text, self._meta(frame)
                        )
                    yield frame
                    if saved is not None:
                        await asyncio.shield(saved)
                        saved = None
        except Exception as exc:
            outcome = "failed"
            self._metrics.errors.labels(getattr(exc, "code", "internal")).inc()
            raise
        finally:
            self._in_flight(-1)
            self._metrics.turns.labels(outcome).inc()
            if not answered and partial:
                # A quick local insert; awaiting a thread here would race a cancellation in progress.
                self._store("".join(partial).strip(), {"interrupted": True})

    @staticmethod
    def _meta(frame: AnswerText) -> dict[str, Any]:
        return {
            "first_token_ms": frame.first_token_ms,
            "total_ms": frame.total_ms,
            "engine": frame.engine,
            "model": frame.model,
            "sources": frame.sources,
            **({"grounding": frame.grounding} if frame.grounding else {}),
            **{key: value for key in ("off_language", "left_out") if (value := getattr(frame, key))},
        }


# Each stage's latency, from the frame that reports it: (stage, the frame's field in ms).
_LATENCY: dict[type[Frame], tuple[str, str]] = {
    Transcription: ("asr", "asr_ms"),
    AnswerText: ("llm", "first_token_ms"),
    AudioOut: ("tts", "synth_ms"),
    VideoOut: ("lipsync", "render_ms"),
}


class ConversationService:
    def __init__(
        self,
        db: Database,
        tutors: TutorStore,
        engines: Engines,
        kbs: KnowledgeBases,
        avatars: Avatars,
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self.metrics = metrics
        self.turns_in_flight = 0  # what a drain waits for
        self._avatars = avatars
        self._db = db
        self._tutors = tutors
        self.engines = engines
        self._kbs = kbs
        self._settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._foreseen: dict[str, _Foreseen] = {}  # by session id
        self._foreseen_lock = threading.Lock()  # written on the loop, taken in a turn's thread

    # -- a tutor's prompt kept warm ------------------------------------------------------------
    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def prepare_tutor(self, tutor_id: int, session_id: str | None = None, chat_id: str = "") -> None:
        """Have the model compute this tutor's system prompt before a student asks (at start-up,
        a session's opening, a teacher's edit), with a session that chat's history too (after a
        restart): the next turn's prompt is then mostly computed. A failure costs only speed."""
        try:
            tutor = await asyncio.to_thread(self._tutors.get, tutor_id)
            system = system_prompt(tutor)
            if session_id is None:
                messages = [ChatMessage("system", system)]
            else:
                limit = self._settings.history_max_messages
                history = await asyncio.to_thread(self.history, session_id, chat_id, limit) if limit else []
                # The next question is not known yet: everything before it.
                messages = fit_prompt(self.engines.llm, system, history, "", self._settings.llm_max_tokens)[:-1]
            await self.engines.llm.prepare(messages)
        except Exception as exc:  # the turn itself will meet and report any real problem
            log.info("could not prepare tutor %s's prompt: %s", tutor_id, exc)

    def latest_chats(self, count: int) -> list[tuple[int, str, str]]:
        """This replica's live chats spoken in last: (tutor, session, chat), newest first."""
        latest = func.max(_MESSAGES.c.id)
        query = (
            select(_SESSIONS.c.tutor_id, _MESSAGES.c.session_id, _MESSAGES.c.chat_id)
            .join(_SESSIONS, _SESSIONS.c.id == _MESSAGES.c.session_id)
            .where(_SESSIONS.c.status == "active", _SESSIONS.c.replica == self._settings.replica)
            .group_by(_SESSIONS.c.tutor_id, _MESSAGES.c.session_id, _MESSAGES.c.chat_id)
            .order_by(latest.desc())
            .limit(count)
        )
        with self._db.transaction() as db:
            return [(row.tutor_id, row.session_id, row.chat_id) for row in db.execute(query)]

    def prepare_tutor_soon(self, tutor_id: int) -> None:
        """From a sync route's thread: prepare in the background, on the server's loop."""
        if self._loop is not None and not self._loop.is_closed():
            asyncio.run_coroutine_threadsafe(self.prepare_tutor(tutor_id), self._loop)

    # Core queries, not the ORM, in as few transactions as possible: these run on every turn.
    def history(self, session_id: str, chat_id: str, limit: int | None = None) -> list[StoredMessage]:
        with self._db.transaction() as db:
            return self._history(db, session_id, chat_id, limit)

    def _history(self, db: Connection, session_id: str, chat_id: str, limit: int | None) -> list[StoredMessage]:
        query = (
            select(_MESSAGES.c.role, _MESSAGES.c.content)
            # An empty answer is one cut off before its first word: nothing to remember.
            .where(_MESSAGES.c.session_id == session_id, _MESSAGES.c.chat_id == chat_id, _MESSAGES.c.content != "")
            .order_by(_MESSAGES.c.id.desc())
            .limit(limit)
        )
        return [StoredMessage(r.role, r.content) for r in reversed(db.execute(query).all())]

    def close_unanswered(self) -> int:
        """At start-up: questions of this replica's live sessions whose answer was in flight
        when the process died (kill -9, a power cut) get an empty answer marked interrupted, so
        the transcript says what happened and the chat's history reads question, answer again.
        Other replicas' sessions may be answering right now: theirs are left alone."""
        last = (
            select(func.max(_MESSAGES.c.id))
            .join(_SESSIONS, _SESSIONS.c.id == _MESSAGES.c.session_id)
            .where(_SESSIONS.c.status == "active", _SESSIONS.c.replica == self._settings.replica)
            .group_by(_MESSAGES.c.session_id, _MESSAGES.c.chat_id)
        )
        with self._db.transaction() as db:
            open_questions = db.execute(
                select(_MESSAGES.c.session_id, _MESSAGES.c.chat_id).where(
                    _MESSAGES.c.id.in_(last), _MESSAGES.c.role == "user"
                )
            ).all()
            for session_id, chat_id in open_questions:
                self._insert(
                    db, session_id, chat_id, "assistant", "", {"interrupted": True, "reason": "server stopped"}
                )
        return len(open_questions)

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
        """Read what the turn needs, ground it in the material, store the student's message and
        build the prompt: one trip off the loop.

        A tutor with knowledge bases answers questions about the material from its evidence:
        quoted (the embedded model would invent), or phrased by a stronger model and checked
        sentence by sentence; with no evidence it declines, without asking the model. Small talk
        and requests about the last answer need no material and are answered from the chat (small
        talk with a set phrase where the embedded model would answer: it loops)."""
        settings = self._settings
        text = self.check_text(question.text)
        tutor = self._tutors.get(session.tutor_id)
        avatar = self._avatars.frames(tutor.avatar_id) if self.engines.lipsync is not None else None
        voice = self._voice(tutor)
        kb_ids = self._kb_ids(tutor, session)
        foreseen = self._take_foreseen(session.id, chat_id, text, voice)
        grounding, conversation = None, talk.is_conversation(text)
        if kb_ids and not conversation:
            grounding = foreseen.grounding if foreseen else self._ground(session.id, chat_id, kb_ids, text)
        started = TurnStarted(voice, avatar, tutor.language, foreseen.spoken if foreseen else {})
        limit = settings.history_max_messages
        with self._db.transaction() as db:
            history = self._history(db, session.id, chat_id, limit) if limit else []
            self._insert(db, session.id, chat_id, "user", text, question.meta)
        if grounding is not None and (answer := self._from_material(grounding, tutor.language)):
            return [started, answer]
        if self.engines.llm.name == "local" and (reply := talk.small_talk_reply(text, tutor)):
            return [started, AnswerText(reply, engine="set phrase")]
        if kb_ids and not self._phrases() and conversation and not talk.small_talk(text):
            return [started, self._more(session.id, chat_id, kb_ids, text, tutor.language)]
        options = GenerationOptions(
            model=settings.llm_model_for(tutor.id, tutor.llm_model),
            temperature=tutor.temperature if tutor.temperature is not None else settings.llm_temperature,
            max_tokens=settings.llm_max_tokens,
        )
        system = system_prompt(tutor, grounding.evidence if grounding else None)
        messages = fit_prompt(self.engines.llm, system, history, text, options.max_tokens)
        if grounding is None:
            return [started, LLMRequest(messages, options)]
        return [started, Grounded(grounding), LLMRequest(messages, options, grounding.citations())]

    def _voice(self, tutor: Tutor) -> Voice:
        return Voice.resolve(tutor.voice or self._settings.tts_voice, tutor.language)

    def _from_material(self, grounding: Grounding, language: str) -> AnswerText | None:
        """The answer the material gives without the model: the decline where nothing supports
        the question, else its evidence quoted (unless a model phrases it, `_phrases`)."""
        if not grounding.answered:
            return AnswerText(said(NOT_COVERED, language), engine="grounding", grounding=grounding.summary())
        if self._phrases():
            return None
        quoted = {**grounding.summary(), "style": "quoted"}
        return AnswerText(grounding.quote, grounding.citations(), engine="quoted", grounding=quoted)

    def _recent(self, session_id: str, chat_id: str, exchanges: int = TOPIC_EXCHANGES) -> list[tuple[str, str, Any]]:
        """The chat's last questions and answers, newest first: role, text, meta."""
        with self._db.transaction() as db:
            query = (
                select(_MESSAGES.c.role, _MESSAGES.c.content, _MESSAGES.c.meta)
                .where(_MESSAGES.c.session_id == session_id, _MESSAGES.c.chat_id == chat_id)
                .order_by(_MESSAGES.c.id.desc())
                .limit(2 * exchanges)
            )
            return [(role, content, meta) for role, content, meta in db.execute(query)]

    def _ground(self, session_id: str, chat_id: str, kb_ids: list[str], text: str) -> Grounding:
        """What the material says to the question, read after the chat's last answers (`talk`)."""
        topic = talk.last_topic(self._recent(session_id, chat_id), lambda: talk.course_words(self._kbs, kb_ids))
        ground = lambda q: self._kbs.ground(kb_ids, q, self._settings.kb_top_k)  # noqa: E731
        return talk.ground_in_context(ground, talk.plainly(text), topic)

    def _more(self, session_id: str, chat_id: str, kb_ids: list[str], text: str, language: str) -> AnswerText:
        """A request about the last answer where the model may not phrase the material (`talk.more_answer`)."""
        search = lambda query: self._kbs.search(kb_ids, query, self._settings.kb_top_k)  # noqa: E731
        recent = self._recent(session_id, chat_id, MORE_EXCHANGES)
        said_, cited, grounding = talk.more_answer(text, recent, search, language)
        return AnswerText(said_, cited, engine="quoted" if cited else "grounding", grounding=grounding)

    async def foresee(self, session: SessionInfo, chat_id: str, text: str) -> None:
        """Begin the answer to words the turn is held on (they sounded unfinished, or only
        perhaps finished: "What is an atom?" to SmolLM2), while the student may still go on:
        the material searched and, for an answer the material gives without the model, its
        first sentence spoken. The turn that ends on exactly these words starts from them
        (`_begin_turn`); any other turn drops them. Best effort: a failure costs only speed."""
        foreseen = _Foreseen(text, chat_id)
        with self._foreseen_lock:
            self._sweep_foreseen()
            self._foreseen[session.id] = foreseen
        try:
            tutor = await asyncio.to_thread(self._tutors.get, session.tutor_id)
            kb_ids = await asyncio.to_thread(self._kb_ids, tutor, session)
            if not kb_ids or talk.is_conversation(text):
                return
            grounding = await asyncio.to_thread(self._ground, session.id, chat_id, kb_ids, text)
            voice = self._voice(tutor)
            answer, tts = self._from_material(grounding, tutor.language), self.engines.tts
            if answer is not None and tts is not None:
                if first := first_spoken(answer.text, self._settings.tts_max_sentence_chars):
                    speaking = asyncio.ensure_future(tts.synthesize(first, voice))
                    speaking.add_done_callback(consume)
                    foreseen.spoken[first] = speaking
            foreseen.grounding, foreseen.voice = grounding, voice
        finally:
            foreseen.grounded.set()

    def _sweep_foreseen(self) -> None:
        now = time.monotonic()
        for stale in [k for k, f in self._foreseen.items() if now - f.at > FORESIGHT_SECONDS]:
            del self._foreseen[stale]

    def _take_foreseen(self, session_id: str, chat_id: str, text: str, voice: Voice) -> _Foreseen | None:
        """What `foresee` began for this session, if it was for these words in this chat (whose
        answers a follow-up is read after) and this voice:
        waited for while the material is still being searched (off the loop: a turn begins in
        a worker)."""
        with self._foreseen_lock:
            foreseen = self._foreseen.pop(session_id, None)
            self._sweep_foreseen()
        too_old = time.monotonic() - FORESIGHT_SECONDS
        if foreseen is None or (foreseen.text, foreseen.chat_id) != (text, chat_id) or foreseen.at < too_old:
            return None
        foreseen.grounded.wait(FORESIGHT_WAIT_SECONDS)
        return foreseen if foreseen.grounding is not None and foreseen.voice == voice else None

    def _kb_ids(self, tutor: Tutor, session: SessionInfo) -> list[str]:
        """The knowledge bases a turn may draw on: the tutor's, and the session's own."""
        named = [*tutor.kb_ids, *([session.kb_id] if session.kb_id else [])]
        return self._kbs.existing(list(dict.fromkeys(named))) if named else []

    def _phrases(self) -> bool:
        """Whether the model may phrase grounded answers: `KB_ANSWER_STYLE`, and with `auto`
        any model but the embedded one (which invents: its answers are the evidence, quoted)."""
        style = self._settings.kb_answer_style
        return style == "phrase" or (style == "auto" and self.engines.llm.name != "local")

    def listening(self) -> tuple[VAD, ASR]:
        """The VAD and the recogniser, or a clear refusal where speech input is off."""
        vad, asr = self.engines.vad, self.engines.asr
        if vad is None or asr is None:
            raise EngineUnavailable("speech input is turned off on this server (ENABLE_ASR=false); send text")
        return vad, asr

    def turn_end(self) -> TurnEnd | None:
        """What reads the early transcript for the end of a turn, where one runs."""
        return self.engines.turn_end

    async def listening_for(self, session: SessionInfo) -> ListenFor:
        """What the recogniser listens for in this session: the language (None: detect) and,
        for a Chinese tutor, the course's own words (its subject and the titles of its
        material) and the material itself, which keep Whisper from writing homophones of its
        names (`app/speech/vocabulary.py`). English tutors get neither: their effect on tiny.en
        is unmeasured."""
        tutor = await asyncio.to_thread(self._tutors.get, session.tutor_id)
        language = self._settings.asr_language_for(tutor.language)
        if primary_language(tutor.language) != "zh":
            return ListenFor(language)
        kb_ids = await asyncio.to_thread(self._kb_ids, tutor, session)
        titles = await asyncio.to_thread(talk.course_words, self._kbs, kb_ids)
        words = "、".join(dict.fromkeys(filter(None, [tutor.subject, *titles])))
        material = functools.partial(self._material, kb_ids) if kb_ids else None
        return ListenFor(language, f"{words}。" if words else "", writes_traditional(tutor.language), material)

    def _material(self, kb_ids: list[str], heard: str) -> list[str]:
        """The passages the heard words are about, where the material covers them at all."""
        return [passage.text for passage in self._kbs.search(kb_ids, heard, self._settings.kb_top_k)]

    def answer(
        self,
        session: SessionInfo,
        chat_id: str,
        question: str | SpeechIn,
        *,
        speak: bool = False,
        animate: bool = True,
    ) -> Answer:
        """One turn. A spoken question (16 kHz) is transcribed first; with `speak` the answer
        is voiced sentence by sentence as it streams, and with `animate` also lip-synced as
        MP4 segments (a live call animates the avatar itself, frame by frame)."""
        engines, settings = self.engines, self._settings
        stages: list[Stage] = []
        if isinstance(question, SpeechIn):
            vad, asr = self.listening()
            first: Frame = question
            listen_for = functools.partial(self.listening_for, session)  # asked only when needed
            min_speech = settings.vad_min_speech_ms / 1000
            stages.append(Recognise(asr, vad, listen_for, threshold=settings.vad_threshold, min_speech=min_speech))
        else:
            first = UserText(self.check_text(question))
        begin = Begin(lambda text: self._begin_turn(session, chat_id, text))
        stages += [begin, Generate(engines.llm), KeepLanguage(), Check()]
        if speak and engines.tts is not None:
            stages += [Sentences(settings.tts_max_sentence_chars), Speak(engines.tts)]
            if animate and engines.lipsync is not None:
                stages.append(Animate(engines.lipsync))

        def store(content: str, meta: dict[str, Any]) -> None:
            self._save(session.id, chat_id, "assistant", content, meta)

        return Answer(Pipeline(stages, first), store, self.metrics, self._count_in_flight)

    def _count_in_flight(self, change: int) -> None:
        self.turns_in_flight += change  # on the event loop only: no lock
