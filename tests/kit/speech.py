"""Speech for tests: Piper says any sentence; the moonshine wheel carries a real recording."""

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


@functools.cache
def _piper() -> PiperTTS:
    engine = PiperTTS()
    engine.warmup()
    return engine


def say(text: str, rate: int = 16_000) -> PCM:
    return resample(_piper()._speak(text).pcm, rate)


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
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))
