"""The engines' interfaces, one small Protocol per stage, and the set of engines a server runs.

Every stage (LLM, embeddings, VAD, ASR, TTS, lip-sync) has a production engine and an
embedded one behind the same Protocol; the settings pick them by name through each kind's
`Registry`. `Engines` holds the chosen ones: a stage the operator turned off is `None`, so
code asks "is there a recogniser?" once instead of reading a flag.

Engines warm up in the background so the server answers `/health` at once. The engine's name,
description and fallback flag are read live from the engine itself, so when a composite engine
switches to its fallback (Ollama down → local model), `/health` and the UI say so at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from app.core.media import PCM, Speech, VideoFrame, Voice

log = logging.getLogger(__name__)

WARMING = "warming"
READY = "ready"
FAILED = "failed"


class Warmable(Protocol):
    name: str
    description: str

    def warmup(self) -> None:
        """Load weights or check the server; blocking, called off the event loop."""


# -- LLM ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class GenerationOptions:
    model: str | None
    temperature: float
    max_tokens: int


@dataclass(frozen=True)
class Notice:
    """Not part of the answer: something the student should know about it (e.g. a fallback)."""

    code: str
    text: str


class LLMEngine(Warmable, Protocol):
    context_window: int

    def count_tokens(self, text: str) -> int:
        """Tokens `text` costs in the prompt: exact where the tokenizer is at hand."""

    def stream(self, messages: list[ChatMessage], options: GenerationOptions) -> AsyncIterator[str | Notice]:
        """Yield the answer piece by piece; closing the iterator cancels generation."""

    async def prepare(self, messages: list[ChatMessage]) -> None:
        """Get ready for prompts that begin with `messages` (a tutor's system prompt), so the
        first turn starts sooner; an engine with nothing to keep warm does nothing."""


# -- embeddings -----------------------------------------------------------------------------
class Embedder(Warmable, Protocol):
    multilingual: bool  # False: its similarities between Chinese texts mean nothing

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length vectors, one per text; blocking (call off the event loop)."""


# -- voice activity -------------------------------------------------------------------------
class VADStream(Protocol):
    """One audio stream's detector state (models like Silero are recurrent)."""

    def probability(self, frame: np.ndarray) -> float:
        """Speech probability of one frame of `VAD.frame_samples` 16 kHz samples."""


class VAD(Warmable, Protocol):
    frame_samples: int

    def open(self) -> VADStream: ...


# -- speech recognition ---------------------------------------------------------------------
@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    audio_seconds: float
    elapsed_ms: float
    first_heard: str = ""  # what the first hearing wrote, where the course's words changed it


@dataclass(frozen=True)
class ListenFor:
    """What a session's recogniser listens for: a language (None: detect), a hint, whether
    Chinese is written in Traditional characters (the tutor's, whatever ASR_LANGUAGE says), and
    the course's material: its passages on what words heard are about (a search of the tutor's
    knowledge bases), whose terms a Chinese question is heard again for."""

    language: str | None
    hint: str = ""
    traditional: bool = False
    material: Callable[[str], list[str]] | None = None


class ASR(Warmable, Protocol):
    def transcribe(self, pcm: PCM, language: str | None, hint: str = "", traditional: bool = False) -> Transcript:
        """16 kHz mono in; `language` None means detect it; `hint`: words the speaker is
        likely to use (the course's own terms), which the recogniser is told to expect;
        `traditional`: Chinese heard is written in Traditional characters, else Simplified."""


# -- end of turn ----------------------------------------------------------------------------
# finished: the turn ends now; unsure: finished to a looser reading only, so the turn waits a
# little longer (VAD_UNSURE_MS); hanging: it waits for the rest (VAD_HOLD_MS).
Verdict = Literal["finished", "unsure", "hanging"]


class TurnEnd(Warmable, Protocol):
    def judge(self, text: str) -> Verdict | None:
        """Whether a student's words so far (an early transcript) read as a finished turn,
        perhaps one, or one left hanging; None: cannot tell. Blocking, called off the event loop."""


# -- speech synthesis -----------------------------------------------------------------------
class TTS(Warmable, Protocol):
    async def synthesize(self, text: str, voice: Voice) -> Speech: ...


# -- lip-sync -------------------------------------------------------------------------------
class PreparedAvatar(Protocol):
    """A prepared avatar as a lip-sync engine draws it (`avatars.frames.AvatarFrames`): frame
    k of its idle loop is the picture the tutor shows at time k/fps, speaking or not."""

    id: str
    fps: int
    size: int
    count: int
    folder: Path
    faces: np.ndarray  # x, y, w, h of the face in each stored frame
    mouths: np.ndarray  # cx, cy, w, h of the mouth in each stored frame

    def index(self, k: int) -> int:
        """Which stored frame shows at loop position k."""

    def frame(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The idle picture at loop position k, and its mouth box."""


class LipSync(Warmable, Protocol):
    def render(self, avatar: PreparedAvatar, speech: Speech, start: int) -> Iterator[VideoFrame]:
        """Frames for `speech`, from loop position `start`, one per 1/fps s of its audio."""


# -- the engines of one server ----------------------------------------------------------------
@dataclass
class Engines:
    """One engine per stage; `None` where the operator turned the stage off."""

    llm: LLMEngine
    embeddings: Embedder
    vad: VAD | None = None
    asr: ASR | None = None
    turn_end: TurnEnd | None = None
    tts: TTS | None = None
    lipsync: LipSync | None = None

    def stages(self) -> dict[str, Warmable]:
        """The stages that run, by name, in pipeline order."""
        running = ((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))
        return {name: engine for name, engine in running if engine is not None}


class Outage:
    """A primary engine's outage: since when, why, and whether it is time to try it again.
    While it lasts, turns go straight to the fallback; every `probe_seconds` one tries the
    primary first."""

    def __init__(self, probe_seconds: float) -> None:
        self.probe_seconds = probe_seconds
        self.since: float | None = None
        self.reason = ""
        self._last_try = 0.0

    @property
    def active(self) -> bool:
        return self.since is not None

    def down(self, exc: Exception) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        self._last_try = now
        self.reason = str(exc)

    def up(self) -> None:
        self.since = None
        self.reason = ""

    def retry_due(self) -> bool:
        return time.monotonic() - self._last_try >= self.probe_seconds


class Composite:
    """A stage engine made of a primary and a fallback: it shows the one serving now, so
    `/health` names the fallback the moment it takes over."""

    primary: Any
    fallback: Any
    fallback_active: bool

    @property
    def _current(self) -> Any:
        return self.fallback if self.fallback_active else self.primary

    @property
    def name(self) -> str:
        return self._current.name

    @property
    def description(self) -> str:
        return self._current.description


@dataclass
class StageState:
    state: str = WARMING
    detail: str = ""


class Warmup:
    """Each running stage's engine warmed in the background, and what `/health` says of it."""

    def __init__(self, engines: Engines) -> None:
        self.engines = engines
        self.states = {stage: StageState() for stage in engines.stages()}

    async def run(self) -> None:
        # A thread of its own for each stage: the default executor stays free for the turns and
        # the session sweep, which would otherwise queue behind every load (seven stages, six
        # workers on two cores), for as long as the quickest model takes to load.
        stages = self.engines.stages()
        pool = ThreadPoolExecutor(max_workers=len(stages), thread_name_prefix="warmup")
        try:
            await asyncio.gather(*(self._warm(stage, engine, pool) for stage, engine in stages.items()))
        finally:
            pool.shutdown(wait=False)

    async def _warm(self, stage: str, engine: Warmable, pool: ThreadPoolExecutor) -> None:
        state = self.states[stage]
        try:
            await asyncio.get_running_loop().run_in_executor(pool, engine.warmup)
        except Exception as exc:  # a failed engine is reported, never fatal to the server
            log.error("%s engine %s failed to warm up: %s", stage, engine.name, exc)
            state.state, state.detail = FAILED, str(exc)
        else:
            state.state = READY
            log.info("%s engine ready: %s", stage, engine.description)

    def stage(self, stage: str, engine: Warmable) -> dict[str, Any]:
        state = self.states[stage]
        detail = getattr(engine, "status_detail", "") or state.detail
        return {
            "engine": engine.name,
            "description": engine.description,
            "state": state.state,
            "ready": state.state == READY,
            "fallback": bool(getattr(engine, "fallback_active", False)),
            "detail": detail,
        }

    def summary(self) -> dict[str, Any]:
        stages = {name: self.stage(name, engine) for name, engine in self.engines.stages().items()}
        return {
            "engines": {name: s["engine"] for name, s in stages.items()},
            "stages": stages,
            "ready": all(s["ready"] for s in stages.values()),
        }
