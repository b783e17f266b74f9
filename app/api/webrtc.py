"""`GET /v1/webrtc/config` (alias `/api/webrtc/config`): ICE servers for a browser, with TURN
credentials that expire after `TURN_TTL_SECONDS`, and the relay-only policy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.deps import ServicesDep
from app.errors import EngineUnavailable
from turn import credentials

router = APIRouter(tags=["webrtc"])


@router.get("/v1/webrtc/config")
@router.get("/api/webrtc/config", include_in_schema=False)
def webrtc_config(services: ServicesDep, who: str = "student") -> dict[str, Any]:
    settings = services.settings
    if settings.turn_secret is None or not settings.webrtc_turn_server:
        raise EngineUnavailable("WebRTC is not configured on this server (TURN_SECRET and WEBRTC_TURN_SERVER)")
    issued = credentials.issue(settings.turn_secret.get_secret_value(), settings.turn_ttl_seconds, who[:64])
    servers: list[dict[str, Any]] = [
        {"urls": [settings.webrtc_turn_server], "username": issued.username, "credential": issued.credential}
    ]
    if settings.webrtc_stun_server:
        servers.append({"urls": [settings.webrtc_stun_server]})
    return {
        "iceServers": servers,
        "iceTransportPolicy": "relay",
        "public_ip": settings.webrtc_public_ip,
        "port_min": settings.webrtc_port_min,
        "port_max": settings.webrtc_port_max,
        "expires_at": issued.expires_at,
    }
