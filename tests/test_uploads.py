"""Upload limits hold while the body streams: an upload declared too large is refused before
any of it is read, one that streams past its limit (chunked) is cut as soon as it does, and
nothing of either is stored. Raw HTTP over a socket, so the test controls the pace."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.kit.live import LiveServer

LIMIT = 1024 * 1024
BOUNDARY = "vtboundary"


@pytest.fixture
def small(start_server) -> LiveServer:
    return start_server(kb_max_upload_bytes=LIMIT, avatar_max_upload_bytes=LIMIT)


def _head(path: str, port: int, length: str) -> bytes:
    framing = "Content-Length" if length.isdigit() else "Transfer-Encoding"
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{framing}: {length}\r\n\r\n"
    ).encode()


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = dict(line.lower().split(b": ", 1) for line in head.strip().split(b"\r\n")[1:])
    length = int(headers[b"content-length"])
    return status, json.loads(await reader.readexactly(length))


def _kb(api: httpx.Client) -> str:
    return api.post("/v1/kbs", json={"name": "Course"}).json()["id"]


@pytest.mark.parametrize("path", ["/v1/kbs/{kb}/documents", "/v1/avatars/upload"])
async def test_an_upload_declared_too_large_is_refused_before_its_body(small: LiveServer, path: str) -> None:
    with small.client() as api:
        target = path.format(kb=_kb(api))
    reader, writer = await asyncio.open_connection("127.0.0.1", small.settings.management_api_port)
    try:
        writer.write(_head(target, small.settings.management_api_port, str(50 * LIMIT)))
        await writer.drain()
        # No byte of the body was sent, yet the answer comes.
        status, body = await asyncio.wait_for(_response(reader), 10)
    finally:
        writer.close()
    assert status == 413 and body["code"] == "too_large" and "1 MB" in body["detail"]


async def test_an_upload_streaming_past_its_limit_is_cut_as_it_streams(small: LiveServer) -> None:
    with small.client() as api:
        kb = _kb(api)
    port = small.settings.management_api_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="notes.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    chunk = b"The mitochondrion is the powerhouse of the cell. " * 1300  # ~64 KB
    sent, answer = 0, None
    writer.write(_head(f"/v1/kbs/{kb}/documents", port, "chunked"))
    try:
        for piece in [part, *([chunk] * 1000)]:  # 64 MB if nobody stops it
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
            await writer.drain()
            try:
                answer = await asyncio.wait_for(_response(reader), 0.005)
                break
            except TimeoutError:
                continue
    except ConnectionError:  # the server closed the connection after answering
        answer = await asyncio.wait_for(_response(reader), 10)
    finally:
        writer.close()
    assert answer is not None and answer[0] == 413 and answer[1]["code"] == "too_large", answer
    assert sent < 16 * LIMIT, f"the server read {sent} bytes of a {LIMIT}-byte limit before refusing"
    with small.client() as api:
        assert api.get(f"/v1/kbs/{kb}/documents").json() == []  # nothing was stored
        # The server is fine: an upload within the limit goes through.
        ok = api.post(f"/v1/kbs/{kb}/documents", files={"file": ("notes.txt", chunk)})
        assert ok.status_code == 202, ok.text
