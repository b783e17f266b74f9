"""`GET /health`: liveness, and which engine serves each stage (open, no API key)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from app.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(services: ServicesDep) -> dict[str, Any]:
    active = await asyncio.to_thread(services.sessions.count_active)
    return {
        "status": "ok",
        **services.warmup.summary(),
        "sessions": {"active": active, "max": services.settings.max_sessions},
        "websockets": services.live.count(),
        "webrtc": services.calls.summary(),
    }
