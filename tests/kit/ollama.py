"""A small server that speaks Ollama's HTTP API, answering with the real local model.

No Ollama server can run here, so the production client code (the official `ollama` package,
streaming, error handling) is tested against this: `/api/tags`, `/api/version`, `/api/chat`
streamed (NDJSON) and not, and Ollama's error shape for a missing model. It records every
chat request, and can be told to die mid-answer.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from app.core.engines import ChatMessage, GenerationOptions
from tests.kit.live import free_port


@dataclass
class ChatCall:
    model: str
    messages: list[dict[str, str]]
    options: dict[str, Any]


@dataclass
class FakeOllama:
    engine: Any  # the local model (or a scripted engine) that writes the answers
    models: list[str] = field(default_factory=lambda: ["smollm2:135m"])
    calls: list[ChatCall] = field(default_factory=list)
    die_after: int | None = None  # pieces streamed before the connection is cut
    port: int = field(default_factory=free_port)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> FastAPI:
        app = FastAPI()

        def now() -> str:
            return dt.datetime.now(dt.UTC).isoformat()

        @app.get("/api/version")
        async def version() -> dict[str, str]:
            return {"version": "0.6.0-fake"}

        @app.get("/api/tags")
        async def tags() -> dict[str, Any]:
            return {
                "models": [
                    {"name": m, "model": m, "modified_at": now(), "size": 1, "digest": "0" * 64, "details": {}}
                    for m in self.models
                ]
            }

        @app.post("/api/chat")
        async def chat(request: Request) -> Any:
            body = await request.json()
            model = body.get("model", "")
            if model not in self.models:
                return JSONResponse({"error": f"model '{model}' not found"}, status_code=404)
            self.calls.append(ChatCall(model, body.get("messages", []), body.get("options", {})))
            messages = [ChatMessage(m["role"], m["content"]) for m in body.get("messages", [])]
            options = body.get("options", {})
            gen = GenerationOptions(model, options.get("temperature", 0.4), options.get("num_predict", 64))

            if not body.get("stream", True):
                text = "".join([p async for p in self.engine.stream(messages, gen)])
                return {
                    "model": model,
                    "created_at": now(),
                    "message": {"role": "assistant", "content": text},
                    "done": True,
                    "done_reason": "stop",
                }

            async def lines() -> Any:
                count = 0
                async for piece in self.engine.stream(messages, gen):
                    if self.die_after is not None and count >= self.die_after:
                        raise ConnectionResetError("fake Ollama died mid-answer")
                    count += 1
                    chunk = {
                        "model": model,
                        "created_at": now(),
                        "message": {"role": "assistant", "content": piece},
                        "done": False,
                    }
                    yield json.dumps(chunk) + "\n"
                yield (
                    json.dumps(
                        {
                            "model": model,
                            "created_at": now(),
                            "message": {"role": "assistant", "content": ""},
                            "done": True,
                            "done_reason": "stop",
                            "eval_count": count,
                        }
                    )
                    + "\n"
                )

            return StreamingResponse(lines(), media_type="application/x-ndjson")

        return app

    def start(self) -> FakeOllama:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="critical")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert time.monotonic() < deadline, "fake Ollama did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server and self._thread:
            self._server.should_exit = True
            self._thread.join(timeout=20)
        self._server = self._thread = None
