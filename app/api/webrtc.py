"""`GET /v1/webrtc/config` (alias `/api/webrtc/config`): ICE servers for a browser, with TURN
credentials that expire after `TURN_TTL_SECONDS`, and the relay-only policy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.deps import ServicesDep
from app.rtc.peers import browser_configuration

router = APIRouter(tags=["webrtc"])


@router.get("/v1/webrtc/config")
@router.get("/api/webrtc/config", include_in_schema=False)
def webrtc_config(services: ServicesDep, who: str = "student") -> dict[str, Any]:
    settings = services.settings
    config = browser_configuration(settings, who)
    if settings.webrtc_stun_server:
        config["iceServers"].append({"urls": [settings.webrtc_stun_server]})
    return {
        **config,
        "public_ip": settings.webrtc_public_ip,
        "port_min": settings.webrtc_port_min,
        "port_max": settings.webrtc_port_max,
    }
