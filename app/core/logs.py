"""Logging set-up that keeps secrets out of the logs.

Engine tokens travel in the WebSocket URL's query string (the contract says so), and uvicorn
logs request lines verbatim, so every record is scrubbed of `token=` values before it is
written.
"""

from __future__ import annotations

import logging
import re

_SECRET_QUERY = re.compile(r"((?:token|key|password|secret)=)[^&\s\"']+", re.IGNORECASE)


def redact(text: str) -> str:
    return _SECRET_QUERY.sub(r"\1***", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        return True


def install_redaction() -> None:
    """Attach the filter to every handler, after uvicorn has configured its own."""
    redactor = RedactSecrets()
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access"))]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(redactor)


def configure(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Alembic narrates every start-up migration check at INFO; only real upgrades matter.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    install_redaction()
