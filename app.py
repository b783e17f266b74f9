"""Composition root: read the settings, wire the services, serve everything on one port.

    python app.py

REST, the WebSocket, and the Gradio UI (under UI_PATH) share one process and one port;
a single worker, because live conversations are held in memory.
"""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import uvicorn  # noqa: E402

from app.core import logs  # noqa: E402
from app.core.settings import Settings  # noqa: E402
from app.server import GRACEFUL_SHUTDOWN_SECONDS, DrainingServer, create_app  # noqa: E402
from app.services import build_services  # noqa: E402

log = logging.getLogger("virtual_tutor")


def main() -> int:
    settings = Settings()
    logs.configure(settings.log_level)
    if settings.binds_beyond_loopback() and settings.management_api_key is None and not settings.allow_insecure_bind:
        log.error(
            "refusing to listen on %s without MANAGEMENT_API_KEY: set a key, listen on 127.0.0.1, "
            "or set ALLOW_INSECURE_BIND=true to accept an open management API",
            settings.management_api_host,
        )
        return 2
    services = build_services(settings)
    application = create_app(services)
    config = uvicorn.Config(
        application,
        host=settings.management_api_host,
        port=settings.management_api_port,
        # Oversized messages are answered with an error by the handler, not a dropped socket.
        ws_max_size=settings.ws_max_message_bytes * 2,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = DrainingServer(config, services)
    logs.install_redaction()
    log.info(
        "serving on http://%s:%d (UI at %s)",
        settings.management_api_host,
        settings.management_api_port,
        settings.ui_path,
    )
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
