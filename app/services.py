"""The composition: one `Services` object holding everything a server runs, built from the
settings. `app.py` builds it, and so do the tests, with their own settings and engines."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.conversation.service import ConversationService
from app.conversation.sessions import SessionManager
from app.core.db import Database, Pool
from app.core.engines import Engines, Warmup
from app.core.events import Events, replica_events
from app.core.metrics import Metrics
from app.core.settings import Settings
from app.rtc.peers import Peers
from app.speech.registry import ASR_ENGINES, TTS_ENGINES, VAD_ENGINES
from app.speech.turn_end import ModelTurnEnd
from app.ws import LiveConnections
from avatars.lipsync import LIPSYNC_ENGINES
from avatars.prepare import Limits
from avatars.service import Avatars
from kb.embeddings import EMBEDDING_ENGINES
from kb.service import KnowledgeBases
from kb.vectors import chroma_client
from tutors.accounts import TeacherStore
from tutors.llm import LLM_ENGINES
from tutors.store import TutorStore
from tutors.transcripts import TranscriptStore

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    events: Events
    engines: Engines
    warmup: Warmup
    teachers: TeacherStore
    tutors: TutorStore
    transcripts: TranscriptStore
    sessions: SessionManager
    kbs: KnowledgeBases
    avatars: Avatars
    conversation: ConversationService
    live: LiveConnections
    calls: Peers
    metrics: Metrics


def build_engines(settings: Settings) -> Engines:
    """Each stage's engine, by name from the settings; the stages turned off are `None`."""
    return Engines(
        llm=LLM_ENGINES.create(settings),
        embeddings=EMBEDDING_ENGINES.create(settings),
        vad=VAD_ENGINES.create(settings) if settings.enable_asr else None,
        asr=ASR_ENGINES.create(settings) if settings.enable_asr else None,
        turn_end=ModelTurnEnd() if settings.enable_asr and settings.vad_end_of_turn == "model" else None,
        tts=TTS_ENGINES.create(settings) if settings.enable_tts else None,
        lipsync=LIPSYNC_ENGINES.create(settings) if settings.enable_avatar else None,
    )


def build_services(settings: Settings) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database, Pool(settings.db_pool_size, settings.db_max_overflow, settings.db_pool_timeout))
    db.migrate()
    replica = settings.replica
    events = replica_events(db.engine, db.shared, replica)
    if db.shared and not settings.chroma_host:
        log.warning(
            "DATABASE_URL is shared but CHROMA_HOST is not set: this box keeps its vectors to itself, "
            "so documents indexed on another replica are found here by keywords only"
        )
    teachers = TeacherStore(db)
    _bootstrap_admin(settings, teachers)
    tutors = TutorStore(db)
    sessions = SessionManager(
        db,
        max_sessions=settings.max_sessions,
        timeout_seconds=settings.session_timeout_seconds,
        replica=replica,
        events=events,
    )
    engines = build_engines(settings)
    kbs = KnowledgeBases(
        db,
        engines.embeddings,
        lambda: chroma_client(settings.data_dir, settings.chroma_host, settings.chroma_port),
        settings.data_dir / "kb_files",
        min_similarity=settings.kb_min_similarity,
        min_coverage=settings.kb_min_coverage,
        min_coverage_cjk=settings.kb_min_coverage_cjk,
        min_sentence_similarity=settings.kb_min_sentence_similarity,
        replica=replica,
        events=events,
    )
    limits = Limits(
        size=settings.avatar_size,
        loop_seconds=settings.avatar_loop_seconds,
        max_video_seconds=settings.avatar_max_video_seconds,
    )
    settings.avatar_imports.mkdir(parents=True, exist_ok=True)
    avatars = Avatars(
        db, settings.avatar_folder, settings.avatar_imports, limits, engines.lipsync, replica=replica, events=events
    )
    live = LiveConnections()
    sessions.on_end(live.session_ended)
    metrics = Metrics()
    conversation = ConversationService(db, tutors, engines, kbs, avatars, settings, metrics)
    calls = Peers(settings, conversation, tutors, avatars, metrics)
    sessions.on_end(calls.session_ended)
    metrics.watch("tutor_sessions_active", "Active sessions on this box", sessions.count_active)
    metrics.watch("tutor_websockets", "Open student sockets", live.count)
    metrics.watch("tutor_calls", "Live calls (WebRTC peers)", lambda: calls.summary()["peers"])
    return Services(
        settings,
        db,
        events,
        engines,
        Warmup(engines),
        teachers,
        tutors,
        TranscriptStore(db),
        sessions,
        kbs,
        avatars,
        conversation,
        live,
        calls,
        metrics,
    )


def _bootstrap_admin(settings: Settings, teachers: TeacherStore) -> None:
    if not (settings.admin_username and settings.admin_password):
        return
    if teachers.find(settings.admin_username) is None:
        teachers.create(settings.admin_username, settings.admin_password.get_secret_value(), is_admin=True)
        log.info("created the admin account %r from ADMIN_USERNAME", settings.admin_username)
