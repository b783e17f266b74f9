"""The frames the real-time path passes from stage to stage: typed, immutable, one per event.

A turn reads as its frames: the student's speech or text, what was heard, who answers and
with what prompt, the answer's pieces and whole, its sentences, their voice and their video;
and the frames that end a turn early (an interruption, a failure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.core.engines import ChatMessage, GenerationOptions, PreparedAvatar, Transcript
from app.core.media import PCM, Speech, Voice
from kb.grounding import Grounding


@dataclass(frozen=True)
class Frame:
    pass


@dataclass(frozen=True)
class SpeechIn(Frame):
    """A whole spoken question, 16 kHz mono. `early` is its transcript, already under way
    when the live turn-taking started recognition during the closing pause."""

    pcm: PCM
    early: asyncio.Future[Transcript] | None = None
    heard: float | None = None  # seconds of speech in it, when the transport has measured them


@dataclass(frozen=True)
class Transcription(Frame):
    text: str
    language: str = ""
    audio_seconds: float = 0.0
    asr_ms: float = 0.0


@dataclass(frozen=True)
class UserText(Frame):
    """The student's question as text, typed or transcribed."""

    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TurnStarted(Frame):
    """Who answers: read once per turn, for the stages after the model."""

    voice: Voice
    avatar: PreparedAvatar | None = None  # the tutor's avatar, when it has a ready one
    language: str = ""  # the tutor's: what the answer must be written in ("" for any)
    # Sentences of this answer being spoken already, by their speakable text: synthesis begun
    # while the turn was held on words that sounded unfinished (`ConversationService.foresee`).
    spoken: Mapping[str, asyncio.Future[Speech]] = field(default_factory=dict)


@dataclass(frozen=True)
class LLMRequest(Frame):
    """A prompt ready for the model: persona, history and the student's words."""

    messages: list[ChatMessage]
    options: GenerationOptions
    sources: list[dict[str, Any]] = field(default_factory=list)  # what grounds the answer, cited


@dataclass(frozen=True)
class Grounded(Frame):
    """The evidence the coming answer must rest on, sentence by sentence (sent before its
    `LLMRequest`, which the model stage consumes)."""

    grounding: Grounding


@dataclass(frozen=True)
class TextDelta(Frame):
    text: str


@dataclass(frozen=True)
class NoticeFrame(Frame):
    """Something the student should know about the answer, outside the answer itself."""

    code: str
    text: str


@dataclass(frozen=True)
class Interrupted(Frame):
    """The student spoke over the tutor: the answer stopped and its queued speech is gone."""


@dataclass(frozen=True)
class Failure(Frame):
    """A turn or a call failed; `code` is the error's, the text is for the student."""

    code: str
    text: str


@dataclass(frozen=True)
class AnswerText(Frame):
    """The whole answer, once: what is stored, shown and cited."""

    text: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    first_token_ms: float | None = None
    total_ms: float | None = None
    engine: str = ""
    model: str | None = None
    grounding: dict[str, Any] = field(default_factory=dict)  # how it rests on the material, for the transcript
    off_language: int = 0  # characters of the model's answer withheld: not in the tutor's language
    left_out: int = 0  # characters of the model's answer left out: a loop, or marks repeated


@dataclass(frozen=True)
class Sentence(Frame):
    text: str
    final: bool = False  # the answer's last: its audio carries `final: true`


@dataclass(frozen=True)
class AudioOut(Frame):
    """One sentence of the answer, spoken; `seq` orders an answer's chunks from 0."""

    speech: Speech
    seq: int
    final: bool
    synth_ms: float = 0.0


@dataclass(frozen=True)
class VideoOut(Frame):
    """One sentence of the answer, lip-synced: an MP4 segment (H.264 + AAC), same `seq`."""

    mp4: bytes
    seq: int
    final: bool
    frames: int
    fps: int
    render_ms: float = 0.0
