"""`GET /health`: which engine serves each stage; `/health/live` and `/health/ready` for a load
balancer (open, no API key)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

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


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process serves requests: a balancer restarts it only when this fails."""
    return {"status": "alive"}


@router.get("/health/ready")
async def ready(services: ServicesDep) -> JSONResponse:
    """200 once every stage's engine is warm and the database answers; 503, with why, before
    that or when either is lost, so a balancer sends new sessions to another box."""
    stages = services.warmup.summary()["stages"]
    reasons = [f"{name}: {state['state']}" for name, state in stages.items() if not state["ready"]]
    if problem := await asyncio.to_thread(services.db.reachable):
        reasons.append(problem)
    return JSONResponse({"ready": not reasons, "reasons": reasons}, status_code=503 if reasons else 200)
