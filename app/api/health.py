"""`GET /health`: which engine serves each stage; `/health/live` and `/health/ready` for a load
balancer; `/metrics` for Prometheus (all open, no API key: nothing in them is a secret)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(services: ServicesDep) -> dict[str, Any]:
    active = await asyncio.to_thread(services.sessions.count_active)
    return {
        "status": "ok",
        "replica": services.settings.replica,
        **services.warmup.summary(),
        "sessions": {"active": active, "max": services.settings.max_sessions},
        "websockets": services.live.count(),
        "webrtc": services.calls.summary(),
    }


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process serves requests: a balancer restarts it only when this fails."""
    return {"status": "alive"}


# Out of the OpenAPI schema, like /metrics: a 503 is its answer by design, not an error of the API.
@router.get("/health/ready", include_in_schema=False)
async def ready(services: ServicesDep) -> JSONResponse:
    """200 once every stage's engine is warm, the database answers and (replicas) the other
    replicas' news is heard; 503, with why, before that, when one is lost or when a replica
    is full, so a balancer sends new sessions to another box."""
    stages = services.warmup.summary()["stages"]
    reasons = [f"{name}: {state['state']}" for name, state in stages.items() if not state["ready"]]
    if problem := await asyncio.to_thread(services.db.reachable):
        reasons.append(problem)
    if problem := services.events.problem():
        reasons.append(problem)
    if services.sessions.draining:
        reasons.append("draining: the server is stopping")
    # Among replicas a full box sends the balancer to the next; a lone box stays in rotation,
    # or the DELETE that frees a slot could not reach it.
    active, most = services.sessions.count_active(), services.settings.max_sessions
    if active >= most and services.db.shared:
        reasons.append(f"full: {active} of {most} sessions")
    return JSONResponse({"ready": not reasons, "reasons": reasons}, status_code=503 if reasons else 200)


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    # The gauges read the database: off the loop.
    return Response(await asyncio.to_thread(services.metrics.exposition), media_type=CONTENT_TYPE_LATEST)
