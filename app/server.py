"""Builds the one ASGI app from the services: REST routes, the WebSocket, and the Gradio UI.

`app.py` (the composition root) calls `build_services` and `create_app`; tests call them too,
with their own settings and engines, and drive the result over real HTTP and WebSockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app import api, ws
from app.api.uploads import UploadLimit, upload_limits
from app.core.errors import TutorError
from app.services import Services

log = logging.getLogger(__name__)

# asyncio's default pool is cpu_count + 4 threads: 6 on two cores. Each live call keeps three
# short jobs going (draw the next frame, encode it, encode its audio) beside the long ones (a
# sentence spoken, a question heard), so at four calls the frames queued behind them: 20.5 fps
# received with every frame drawn on time (bench_webrtc). Threads waiting cost little; the
# work itself is bounded by MAX_SESSIONS.
WORKER_THREADS = 64


async def drain(services: Services) -> None:
    """SIGTERM's first step: take nothing new (`/health/ready` 503, a new session 503
    `draining`), and let the answers in flight finish, for up to DRAIN_SECONDS. The server
    stops after it: sockets close, calls hang up, and the transcripts hold every answer."""
    services.sessions.draining = True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + services.settings.drain_seconds
    log.info("draining: %d answer(s) in flight", services.conversation.turns_in_flight)
    while services.conversation.turns_in_flight and loop.time() < deadline:
        await asyncio.sleep(0.1)
    if services.conversation.turns_in_flight:
        log.warning("drain timed out with %d answer(s) in flight", services.conversation.turns_in_flight)


class DrainingServer(uvicorn.Server):
    """uvicorn, draining on SIGTERM before it stops (a second signal, or Ctrl-C, stops at once)."""

    def __init__(self, config: uvicorn.Config, services: Services) -> None:
        super().__init__(config)
        self.services = services
        self._draining = False
        self._drain: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._draining:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        # A signal handler may run in the middle of one of the loop's steps: hand it over.
        asyncio.get_event_loop().call_soon_threadsafe(self._start_drain, sig, frame)

    def _start_drain(self, sig: int, frame: FrameType | None) -> None:
        self._drain = asyncio.ensure_future(drain(self.services))
        self._drain.add_done_callback(lambda _: super(DrainingServer, self).handle_exit(sig, frame))


# After the drain, how long uvicorn waits for connections still open (a browser page's
# event stream never ends by itself) before it closes them and stops.
GRACEFUL_SHUTDOWN_SECONDS = 5

# As many as the embedded model keeps contexts: its prompt cache holds no more.
PREPARED_AT_START = 4


async def _prepare_prompts(services: Services, warm: asyncio.Task[None]) -> None:
    """After the engines are warm: the conversations this box was in when it stopped (their
    students ask again after a restart), then the tutors edited last, computed before their
    next question. The embedded model takes as many as it has free contexts."""
    await asyncio.shield(warm)
    conversation = services.conversation
    chats = await asyncio.to_thread(conversation.latest_chats, PREPARED_AT_START)
    for tutor_id, session_id, chat_id in chats:
        await conversation.prepare_tutor(tutor_id, session_id, chat_id)
    tutors = await asyncio.to_thread(services.tutors.list)
    # Rows always carry both times (the database's defaults).
    recent = sorted(tutors, key=lambda t: t.updated_at or t.created_at, reverse=True)  # type: ignore[arg-type,return-value]
    for tutor in recent[: PREPARED_AT_START - len(chats)]:
        await conversation.prepare_tutor(tutor.id)


async def _sweep_idle(services: Services) -> None:
    while True:
        await asyncio.sleep(services.settings.session_sweep_seconds)
        try:
            expired = await asyncio.to_thread(services.sessions.expire_idle)
            expired += await asyncio.to_thread(services.sessions.expire_abandoned)
        except Exception:
            log.exception("idle-session sweep failed; retrying at the next interval")
            continue
        if expired:
            log.info("ended %d idle session(s)", len(expired))


def create_app(services: Services, *, with_ui: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        workers = ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="worker")
        asyncio.get_running_loop().set_default_executor(workers)
        services.sessions.bind_loop(asyncio.get_running_loop())
        services.conversation.bind_loop(asyncio.get_running_loop())
        services.events.start()
        if unanswered := await asyncio.to_thread(services.conversation.close_unanswered):
            log.warning("%d answer(s) were cut off when the server last stopped: stored as interrupted", unanswered)
        for doc_id in await asyncio.to_thread(services.kbs.unfinished):
            services.kbs.schedule(doc_id)  # a restart interrupted these
        services.kbs.schedule_sentences()  # documents indexed by an older version
        for avatar_id in await asyncio.to_thread(services.avatars.unfinished):
            services.avatars.schedule(avatar_id)
        warm = asyncio.create_task(services.warmup.run(), name="warm-engines")
        tasks = [
            warm,
            asyncio.create_task(_prepare_prompts(services, warm), name="prepare-prompts"),
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
            await asyncio.to_thread(services.events.close)
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

    app.include_router(api.router)
    app.include_router(ws.router)
    settings = services.settings
    limits = upload_limits(settings.kb_max_upload_bytes, settings.avatar_max_upload_bytes)
    app.add_middleware(UploadLimit, limits=limits)
    if with_ui:
        # Only a server that shows the UI loads Gradio: a headless one (the benchmarks, API-only
        # tests) would otherwise carry its weight (bench_websocket p95 ~100 ms → ~160 ms).
        import gradio as gr

        from app.ui import build_ui

        # The avatars' idle loops are shown to students by path; nothing else on disk is served.
        # Gradio's own upload route refuses a file past the larger of the two limits as it streams.
        gr.mount_gradio_app(
            app,
            build_ui(services),
            path=settings.ui_path,
            allowed_paths=[str(settings.avatar_folder)],
            max_file_size=max(settings.kb_max_upload_bytes, settings.avatar_max_upload_bytes),
        )
    return app
