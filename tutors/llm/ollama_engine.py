"""Production LLM: an Ollama server, through the official `ollama` client (async, streaming).

The model is chosen per turn (each tutor has its own). Connection failures raise
`BackendDown` quickly (a short connect timeout), so a composite engine can fall back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from app.core.engines import ChatMessage, GenerationOptions
from app.core.errors import BackendDown, EngineUnavailable
from tutors.llm.tokens import estimate_tokens

# Before the first token a long prefill is normal; after it, a silent minute means trouble.
READ_TIMEOUT = 60.0


class OllamaLLM:
    name = "ollama"

    def __init__(self, base_url: str, *, connect_timeout: float, context_window: int, default_model: str) -> None:
        import ollama

        self.base_url = base_url
        self.context_window = context_window
        self.default_model = default_model
        self.description = f"Ollama at {base_url}"
        timeout = httpx.Timeout(READ_TIMEOUT, connect=connect_timeout)
        self._client = ollama.AsyncClient(host=base_url, timeout=timeout)
        self._sync = ollama.Client(host=base_url, timeout=timeout)
        self._response_error = ollama.ResponseError

    def warmup(self) -> None:
        self.models()

    def models(self) -> list[str]:
        """The models the server has; raises `BackendDown` when it cannot be reached."""
        try:
            return sorted(m.model for m in self._sync.list().models if m.model)
        except (httpx.TransportError, ConnectionError) as exc:
            raise self._down(exc) from exc

    async def ping(self) -> None:
        try:
            await self._client.list()
        except (httpx.TransportError, ConnectionError) as exc:
            raise self._down(exc) from exc

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    async def prepare(self, messages: list[ChatMessage]) -> None:
        """Nothing: Ollama caches the prompt of the conversation it served last, and priming
        it would push that one out."""

    async def stream(self, messages: list[ChatMessage], options: GenerationOptions) -> AsyncIterator[str]:
        model = options.model or self.default_model
        payload = [{"role": m.role, "content": m.content} for m in messages]
        settings = {
            "temperature": options.temperature,
            "num_predict": options.max_tokens,
            "num_ctx": self.context_window,
        }
        try:
            parts = await self._client.chat(model=model, messages=payload, stream=True, options=settings)
            async for part in parts:
                if part.message.content:
                    yield part.message.content
        except self._response_error as exc:
            if exc.status_code == 404:
                raise EngineUnavailable(
                    f"the Ollama server has no model '{model}'; pull it there (`ollama pull {model}`) "
                    "or choose another model for this tutor"
                ) from exc
            raise EngineUnavailable(f"Ollama refused the request for '{model}': {exc.error}") from exc
        except (httpx.TransportError, ConnectionError) as exc:
            raise self._down(exc) from exc

    def _down(self, exc: Exception) -> BackendDown:
        # The client turns a refused connection into a bare ConnectionError ("Failed to connect").
        never_reached = type(exc) is ConnectionError or isinstance(
            exc, httpx.ConnectError | httpx.ConnectTimeout | ConnectionRefusedError
        )
        what = "is unreachable" if never_reached else "stopped answering"
        return BackendDown(f"Ollama at {self.base_url} {what} ({type(exc).__name__})")
