"""Speech engines chosen from the settings; TTS by name (`TTS_ENGINE`), like the LLM registry."""

from __future__ import annotations

from collections.abc import Callable

from app.errors import InvalidInput
from app.settings import Settings
from app.speech.asr import ASR, WhisperASR
from app.speech.tts import TTS, EdgeTTS, EspeakTTS, PiperTTS, SpeechRouter
from app.speech.vad import VAD, SileroVAD, TurnConfig


def _edge(settings: Settings) -> EdgeTTS:
    return EdgeTTS(settings.edge_tts_timeout, settings.edge_tts_proxy)


def _router(settings: Settings, *, online: bool, piper: bool = True, espeak: bool = True) -> SpeechRouter:
    return SpeechRouter(
        _edge(settings) if online else None,
        PiperTTS(settings.piper_model) if piper else None,
        EspeakTTS(settings.espeak_path) if espeak else None,
        probe_seconds=settings.tts_probe_seconds,
    )


_TTS: dict[str, Callable[[Settings], TTS]] = {
    "auto": lambda s: _router(s, online=True),
    "edge": lambda s: _router(s, online=True, piper=False, espeak=False),
    "piper": lambda s: _router(s, online=False, espeak=False),
    "espeak": lambda s: _router(s, online=False, piper=False),
    "offline": lambda s: _router(s, online=False),
}


def create_tts(settings: Settings) -> TTS:
    factory = _TTS.get(settings.tts_engine)
    if factory is None:
        raise InvalidInput(f"unknown TTS_ENGINE {settings.tts_engine!r}; choose one of: {', '.join(sorted(_TTS))}")
    return factory(settings)


def create_asr(settings: Settings) -> ASR:
    return WhisperASR(settings.asr_model, device=settings.asr_device, beam_size=settings.asr_beam_size)


def create_vad(settings: Settings) -> VAD:
    return SileroVAD()


def turn_config(settings: Settings) -> TurnConfig:
    return TurnConfig(
        threshold=settings.vad_threshold,
        min_speech_ms=settings.vad_min_speech_ms,
        pause_ms=settings.vad_pause_ms,
        preroll_ms=settings.vad_preroll_ms,
        early_ms=settings.vad_early_ms,
        max_seconds=settings.asr_max_seconds,
    )
