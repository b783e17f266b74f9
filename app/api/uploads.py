"""Reading an upload without letting an oversized one into memory."""

from __future__ import annotations

from fastapi import Request, UploadFile

from app.core.errors import InvalidInput, TooLarge


async def read_upload(request: Request, file: UploadFile, limit: int) -> bytes:
    """The file's bytes; 413 when the declared or the actual size passes `limit`."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise TooLarge(f"the upload is larger than {limit // (1024 * 1024)} MB")
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"the upload is larger than {limit // (1024 * 1024)} MB")
    if not file.filename:
        raise InvalidInput("the upload has no file name")
    return data
