"""Builds the one ASGI app from the services: REST routes, the WebSocket, and the Gradio UI.

`app.py` (the composition root) calls `build_services` and `create_app`; tests call them too,
with their own settings and engines, and drive the result over real HTTP and WebSockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app import api, ws
from app.api.uploads import UploadLimit, upload_limits
from app.core.errors import TutorError
from app.services import Services

log = logging.getLogger(__name__)


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
        if unanswered := await asyncio.to_thread(services.conversation.close_unanswered):
            log.warning("%d answer(s) were cut off when the server last stopped: stored as interrupted", unanswered)
        for doc_id in await asyncio.to_thread(services.kbs.unfinished):
            services.kbs.schedule(doc_id)  # a restart interrupted these
        for avatar_id in await asyncio.to_thread(services.avatars.unfinished):
            services.avatars.schedule(avatar_id)
        tasks = [
            asyncio.create_task(services.warmup.run(), name="warm-engines"),
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
