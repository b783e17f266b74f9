"""Uploads that cannot flood the server: the size limit holds while the body streams in.

`UploadLimit` (ASGI middleware) answers 413 to an upload whose declared size passes its route's
limit before reading any of it, and cuts one that streams past the limit (chunked, or lying
about its length) as soon as it does: nothing beyond the limit is read, spooled or stored.
`read_upload` then reads the parsed file within the same limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from fastapi import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import InvalidInput, TooLarge

# Multipart framing around the file itself: boundaries, part headers, other small fields.
FRAMING_BYTES = 64 * 1024


def _too_large(limit: int) -> str:
    return f"the upload is larger than {limit / (1024 * 1024):g} MB"


async def read_upload(file: UploadFile, limit: int) -> bytes:
    """The file's bytes; 413 when they pass `limit`."""
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(_too_large(limit))
    if not file.filename:
        raise InvalidInput("the upload has no file name")
    return data


class _Cut(HTTPException):
    """Raised into the app's body parsing; FastAPI passes an HTTPException through as it is."""

    def __init__(self) -> None:
        super().__init__(413)


class UploadLimit:
    """413 for an upload over its route's limit, decided while its body streams in.

    `limits` maps a POST path to its limit in bytes (None: not an upload route)."""

    def __init__(self, app: ASGIApp, limits: Callable[[str], int | None]) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limits(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        allowed = limit + FRAMING_BYTES
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > allowed:
            await self._refuse(send, limit)
            return
        read = 0
        cut = started = False

        async def counted() -> Message:
            nonlocal read, cut
            message = await receive()
            read += len(message.get("body", b""))
            if message["type"] == "http.request" and read > allowed:
                cut = True
                raise _Cut()
            return message

        async def unless_cut(message: Message) -> None:
            nonlocal started
            if not cut:  # the app's own answer to a body cut short is not the answer
                started = True
                await send(message)

        try:
            await self.app(scope, counted, unless_cut)
        except _Cut:
            pass
        if cut and not started:
            await self._refuse(send, limit)

    @staticmethod
    async def _refuse(send: Send, limit: int) -> None:
        body = json.dumps({"detail": _too_large(limit), "code": TooLarge.code}).encode()
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def upload_limits(kb_bytes: int, avatar_bytes: int) -> Callable[[str], int | None]:
    """The upload routes and their limits: documents into a knowledge base, avatar videos."""
    documents = re.compile(r"^/v1/kbs/[^/]+/documents/?$")

    def limit(path: str) -> int | None:
        if documents.match(path):
            return kb_bytes
        if path.rstrip("/") == "/v1/avatars/upload":
            return avatar_bytes
        return None

    return limit
