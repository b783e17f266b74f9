"""Builds the one ASGI app: services, REST routes, the WebSocket, and the Gradio UI.

`app.py` (the composition root) calls `build_services` and `create_app`; tests call them too,
with their own settings and engines, and drive the result over real HTTP and WebSockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.conversation import ConversationService
from app.db import Database
from app.engines import EngineHub
from app.errors import TutorError
from app.rtc.peers import Peers
from app.sessions import SessionManager
from app.settings import Settings
from app.speech import registry as speech
from app.ws import LiveConnections
from avatars import lipsync
from avatars.prepare import Limits
from avatars.service import Avatars
from kb.embeddings import SentenceEmbedder
from kb.service import KnowledgeBases, chroma_client
from tutors import llm
from tutors.accounts import TeacherStore
from tutors.store import TutorStore
from tutors.transcripts import TranscriptStore

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    teachers: TeacherStore
    tutors: TutorStore
    transcripts: TranscriptStore
    sessions: SessionManager
    hub: EngineHub
    kbs: KnowledgeBases
    avatars: Avatars
    conversation: ConversationService
    live: LiveConnections
    calls: Peers


def build_services(settings: Settings) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database)
    db.migrate()
    teachers = TeacherStore(db)
    _bootstrap_admin(settings, teachers)
    tutors = TutorStore(db)
    sessions = SessionManager(db, max_sessions=settings.max_sessions, timeout_seconds=settings.session_timeout_seconds)
    hub = EngineHub()
    hub.add("llm", llm.create(settings))
    embedder = SentenceEmbedder(settings.embedding_model, settings.embedding_device, settings.embedding_multilingual)
    hub.add("embeddings", embedder)
    if settings.enable_asr:
        hub.add("vad", speech.create_vad(settings))
        hub.add("asr", speech.create_asr(settings))
    if settings.enable_tts:
        hub.add("tts", speech.create_tts(settings))
    kbs = KnowledgeBases(
        db,
        embedder,
        lambda: chroma_client(settings.data_dir, settings.chroma_host, settings.chroma_port),
        settings.data_dir / "kb_files",
        min_similarity=settings.kb_min_similarity,
        min_coverage=settings.kb_min_coverage,
    )
    limits = Limits(
        size=settings.avatar_size,
        loop_seconds=settings.avatar_loop_seconds,
        max_video_seconds=settings.avatar_max_video_seconds,
    )
    settings.avatar_imports.mkdir(parents=True, exist_ok=True)
    engine = lipsync.create(settings) if settings.enable_avatar else None
    if engine is not None:
        hub.add("lipsync", engine)
    avatars = Avatars(db, settings.avatar_folder, settings.avatar_imports, limits, engine)
    live = LiveConnections()
    sessions.on_end(live.session_ended)
    conversation = ConversationService(db, tutors, hub, kbs, avatars, settings)
    calls = Peers(settings, conversation, tutors, avatars)
    sessions.on_end(calls.session_ended)
    return Services(
        settings, db, teachers, tutors, TranscriptStore(db), sessions, hub, kbs, avatars, conversation, live, calls
    )


def _bootstrap_admin(settings: Settings, teachers: TeacherStore) -> None:
    if not (settings.admin_username and settings.admin_password):
        return
    if teachers.find(settings.admin_username) is None:
        teachers.create(settings.admin_username, settings.admin_password.get_secret_value(), is_admin=True)
        log.info("created the admin account %r from ADMIN_USERNAME", settings.admin_username)


async def _sweep_idle(services: Services) -> None:
    while True:
        await asyncio.sleep(services.settings.session_sweep_seconds)
        try:
            expired = await asyncio.to_thread(services.sessions.expire_idle)
        except Exception:
            log.exception("idle-session sweep failed; retrying at the next interval")
            continue
        if expired:
            log.info("ended %d idle session(s)", len(expired))


def create_app(services: Services, *, with_ui: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        services.sessions.bind_loop(asyncio.get_running_loop())
        for doc_id in await asyncio.to_thread(services.kbs.unfinished):
            services.kbs.schedule(doc_id)  # a restart interrupted these
        for avatar_id in await asyncio.to_thread(services.avatars.unfinished):
            services.avatars.schedule(avatar_id)
        tasks = [
            asyncio.create_task(services.hub.warm_all(), name="warm-engines"),
            asyncio.create_task(_sweep_idle(services), name="sweep-idle-sessions"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await services.calls.close_all()
            await services.kbs.close()
            await services.avatars.close()
            services.db.close()

    app = FastAPI(
        title="Virtual Tutor",
        summary="Multi-tenant AI tutor server: sessions, tutors and real-time conversation.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.services = services

    @app.exception_handler(TutorError)
    async def tutor_error(_request: Request, exc: TutorError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        return JSONResponse({"detail": exc.message, "code": exc.code}, status_code=exc.http_status, headers=headers)

    from app import api, ws

    app.include_router(api.router)
    app.include_router(ws.router)
    if with_ui:
        import gradio as gr

        from app.ui import build_ui

        settings = services.settings
        # The avatars' idle loops are shown to students by path; nothing else on disk is served.
        gr.mount_gradio_app(app, build_ui(services), path=settings.ui_path, allowed_paths=[str(settings.avatar_folder)])
    return app
