"""What the stages hand each other: mono audio, spoken sentences with their timings, and
video frames that carry their own slice of the audio.

Every engine and transport speaks these types, so they live on the floor: the speech engines
make `Speech`, the lip-sync engines turn it into `VideoFrame`s, the transports play both.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np

ASR_RATE = 16_000  # what the recognisers and the VAD hear


@dataclass(frozen=True)
class PCM:
    """Mono audio as float32 samples in [-1, 1]."""

    samples: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate

    def to_int16(self) -> np.ndarray:
        return (np.clip(self.samples, -1.0, 1.0) * 32767).astype(np.int16)

    @classmethod
    def from_int16(cls, data: np.ndarray | bytes, sample_rate: int) -> PCM:
        array = np.frombuffer(data, dtype="<i2") if isinstance(data, bytes | bytearray | memoryview) else data
        return cls(array.astype(np.float32) / 32768.0, sample_rate)

    @classmethod
    def silence(cls, seconds: float, sample_rate: int = ASR_RATE) -> PCM:
        return cls(np.zeros(round(seconds * sample_rate), dtype=np.float32), sample_rate)


def resample(pcm: PCM, rate: int) -> PCM:
    if pcm.sample_rate == rate or not len(pcm.samples):
        return PCM(pcm.samples, rate)
    from scipy.signal import resample_poly

    g = math.gcd(pcm.sample_rate, rate)
    out = resample_poly(pcm.samples, rate // g, pcm.sample_rate // g)
    return PCM(out.astype(np.float32), rate)


DEFAULT_VOICES = {"zh": "zh-CN-XiaoxiaoNeural", "en": "en-US-AriaNeural"}
_VOICE_LOCALE = re.compile(r"^([a-z]{2,3})-[A-Za-z]{2,4}-")


def language_tag(language: str | None) -> str | None:
    """A language as operators write it, made one form: `zh_CN`, `ZH-cn` → `zh-cn`; None (or
    empty) stays None, which asks for the language to be detected."""
    return (language.strip().replace("_", "-").lower() or None) if language is not None else None


def primary_language(language: str | None) -> str:
    """The language without its region or script: `zh_CN`, `zh-Hant` → `zh`; "" for None."""
    return (language_tag(language) or "").split("-")[0]


_TRADITIONAL = ("zh-tw", "zh-hk", "zh-mo", "zh-hant")


def writes_traditional(language: str | None) -> bool:
    """Whether a Chinese tag asks for Traditional characters: Taiwan, Hong Kong, Macau, Hant."""
    return (language_tag(language) or "").startswith(_TRADITIONAL)


@dataclass(frozen=True)
class Voice:
    name: str  # an Edge voice name; offline engines use only its language
    language: str  # "zh", "en", ...

    @classmethod
    def resolve(cls, voice: str | None, language: str) -> Voice:
        """The tutor's voice, else a default for its language; the voice's own locale wins
        over the tutor's language (a zh-CN voice speaks Chinese)."""
        name = voice or DEFAULT_VOICES.get(language, DEFAULT_VOICES["en"])
        match = _VOICE_LOCALE.match(name)
        return cls(name, match.group(1) if match else language)


@dataclass(frozen=True)
class Phoneme:
    symbol: str
    start: float  # seconds from the start of the speech
    duration: float


@dataclass(frozen=True)
class Speech:
    """One sentence, spoken."""

    pcm: PCM
    text: str
    engine: str
    phonemes: tuple[Phoneme, ...] | None = None  # when the engine knows them (Piper)
    fallback: bool = False


# A voice's lead-in and tail read as silence below this loudness (RMS over 5 ms, about
# -40 dBFS): Piper opens every sentence with 40-85 ms of it, which only delays the answer.
SILENT_RMS = 0.01
_SILENCE_WINDOW_S = 0.005


def trimmed(speech: Speech, lead: float, tail: float | None = None) -> Speech:
    """`speech` with at most `lead` seconds of silence before its first sound and, unless
    `tail` is None, `tail` after its last; its phoneme timings moved with it."""
    samples, rate = speech.pcm.samples, speech.pcm.sample_rate
    window = max(1, round(rate * _SILENCE_WINDOW_S))
    usable = len(samples) // window * window
    loud = np.flatnonzero(np.sqrt(np.mean(samples[:usable].reshape(-1, window) ** 2, axis=1)) >= SILENT_RMS)
    if not len(loud):
        return speech
    start = max(0, int(loud[0]) * window - round(lead * rate))
    end = len(samples) if tail is None else min(len(samples), (int(loud[-1]) + 1) * window + round(tail * rate))
    if start == 0 and end == len(samples):
        return speech
    shift, length = start / rate, (end - start) / rate
    phonemes = None
    if speech.phonemes is not None:
        phonemes = tuple(moved for p in speech.phonemes if (moved := _moved(p, shift, length)).duration > 0) or None
    return replace(speech, pcm=PCM(samples[start:end], rate), phonemes=phonemes)


def _moved(phoneme: Phoneme, shift: float, length: float) -> Phoneme:
    """A phoneme's timing in speech whose first `shift` seconds were cut, `length` seconds kept."""
    start = max(0.0, phoneme.start - shift)
    return Phoneme(phoneme.symbol, start, max(0.0, min(phoneme.start + phoneme.duration - shift, length) - start))


@dataclass(frozen=True)
class VideoFrame:
    image: np.ndarray  # RGB, size × size
    audio: PCM  # the audio that plays while this frame shows (1/fps s)
    index: int  # position in the avatar's endless idle loop


def audio_slices(pcm: PCM, fps: int) -> list[PCM]:
    """The speech cut into per-frame slices; the last is padded with silence."""
    step = pcm.sample_rate / fps
    count = max(1, int(np.ceil(len(pcm.samples) / step)))
    bounds = [round(i * step) for i in range(count + 1)]
    padded = np.concatenate([pcm.samples, np.zeros(bounds[-1] - len(pcm.samples) + 1, dtype=np.float32)])
    return [PCM(padded[bounds[i] : bounds[i + 1]], pcm.sample_rate) for i in range(count)]
