"""The real-time path: a chain of async stages passing typed frames.

Each stage takes the stream of frames from the stage before it and yields frames for the next;
a stage passes through what it does not handle. Cancelling the task that drains the pipeline
(barge-in, a closed socket, an ended session) closes every stage's generator, so each stage
drops what it holds and stops its engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.errors import TutorError
from app.speech.asr import ASR, Transcript
from app.speech.audio import PCM
from app.speech.sentences import SentenceSplitter, speakable
from app.speech.tts import FALLBACK_NOTICE, TTS, Speech, Voice
from app.speech.vad import VAD, speech_seconds
from avatars.lipsync.base import AvatarFrames, LipSync
from avatars.video import encode_mp4
from tutors.llm import ChatMessage, GenerationOptions, LLMEngine, Notice


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
    avatar: AvatarFrames | None = None  # the tutor's avatar, when it has a ready one


@dataclass(frozen=True)
class LLMRequest(Frame):
    """A prompt ready for the model: persona, history and the student's words."""

    messages: list[ChatMessage]
    options: GenerationOptions
    sources: list[dict[str, Any]] = field(default_factory=list)  # what grounds the answer, cited


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


Stage = Callable[[AsyncIterator[Frame]], AsyncIterator[Frame]]


def asr_stage(asr: ASR, vad: VAD, language: str | None, *, threshold: float, min_speech: float) -> Stage:
    """A recording with no speech in it gets an empty transcription (Whisper would invent
    words in silence or noise) and ends the turn."""

    async def run(upstream: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        async for frame in upstream:
            if not isinstance(frame, SpeechIn):
                yield frame
                continue
            if frame.early is not None:  # the VAD already heard speech here
                transcript = await frame.early
            else:
                heard = frame.heard
                if heard is None:
                    heard = await asyncio.to_thread(speech_seconds, vad, frame.pcm, threshold)
                if heard < min_speech:
                    yield Transcription("", audio_seconds=frame.pcm.seconds)
                    yield NoticeFrame("no_speech", "No speech was heard in the recording; please try again.")
                    continue
                transcript = await asyncio.to_thread(asr.transcribe, frame.pcm, language)
            yield Transcription(transcript.text, transcript.language, transcript.audio_seconds, transcript.elapsed_ms)
            if transcript.text:
                meta = {
                    "spoken": True,
                    "asr_ms": round(transcript.elapsed_ms, 1),
                    "language": transcript.language,
                    "recognised_in_pause": frame.early is not None,
                }
                yield UserText(transcript.text, meta)
            else:
                yield NoticeFrame("no_speech", "The recording could not be understood; please try again.")

    return run


def llm_stage(engine: LLMEngine) -> Stage:
    async def run(upstream: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        async for frame in upstream:
            if not isinstance(frame, LLMRequest):
                yield frame
                continue
            started = time.perf_counter()
            first: float | None = None
            parts: list[str] = []
            stream = engine.stream(frame.messages, frame.options)
            try:
                async for piece in stream:
                    if isinstance(piece, Notice):
                        yield NoticeFrame(piece.code, piece.text)
                        continue
                    if not piece:
                        continue
                    if first is None:
                        first = time.perf_counter()
                    parts.append(piece)
                    yield TextDelta(piece)
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
            yield AnswerText(
                "".join(parts).strip(),
                sources=frame.sources,
                first_token_ms=None if first is None else (first - started) * 1000,
                total_ms=(time.perf_counter() - started) * 1000,
                engine=engine.name,  # after the stream: names the fallback if one answered
                model=frame.options.model,
            )

    return run


def sentence_stage(max_chars: int = 160) -> Stage:
    """Streamed text → sentences. An answer that arrives whole (a refusal that never reached
    the model) is split the same way."""

    async def run(upstream: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        splitter = SentenceSplitter(max_chars)
        streamed = False
        async for frame in upstream:
            if isinstance(frame, TextDelta):
                streamed = True
                yield frame
                for sentence in splitter.push(frame.text):
                    yield Sentence(sentence)
            elif isinstance(frame, AnswerText):
                yield frame
                if not streamed:
                    for sentence in splitter.push(frame.text):
                        yield Sentence(sentence)
                yield Sentence(splitter.flush(), final=True)
                splitter, streamed = SentenceSplitter(max_chars), False
            else:
                yield frame

    return run


_DONE = object()


class Worker(Protocol):
    """The slow part of a stage: sees every frame that flows past, handles its own kind."""

    def observe(self, frame: Frame) -> None: ...

    def handle(self, frame: Frame) -> AsyncIterator[Frame]: ...


def background_stage(accepts: type[Frame], make: Callable[[], Worker], *, passthrough: bool = False) -> Stage:
    """Frames of type `accepts` go to a worker running in a task of its own, in order; every
    other frame (and with `passthrough`, the accepted ones too) flows on at once, so the text
    never waits for the voice and the voice never waits for the video. Cancelling the stage
    cancels the worker and the upstream."""

    def run(upstream: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        worker = make()

        async def stage() -> AsyncIterator[Frame]:
            out: asyncio.Queue[Any] = asyncio.Queue()
            todo: asyncio.Queue[Any] = asyncio.Queue()

            async def read() -> None:
                try:
                    async for frame in upstream:
                        worker.observe(frame)
                        if isinstance(frame, accepts):
                            todo.put_nowait(frame)
                            if not passthrough:
                                continue
                        out.put_nowait(frame)
                except Exception as exc:  # handed to the consumer, who raises it in order
                    out.put_nowait(exc)
                finally:
                    todo.put_nowait(_DONE)

            async def work() -> None:
                try:
                    while (frame := await todo.get()) is not _DONE:
                        async for result in worker.handle(frame):
                            out.put_nowait(result)
                except Exception as exc:
                    out.put_nowait(exc)
                finally:
                    out.put_nowait(_DONE)

            tasks = [asyncio.create_task(read()), asyncio.create_task(work())]
            try:
                while (item := await out.get()) is not _DONE:
                    if isinstance(item, Exception):
                        raise item
                    yield item
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        return stage()

    return run


class _Speaker:
    """A voice that fails mid-answer costs the rest of that answer's audio, never its text."""

    def __init__(self, tts: TTS) -> None:
        self.tts = tts
        self.voice: Voice | None = None
        self.seq, self.noticed, self.failed, self.rate = 0, False, False, 16_000

    def observe(self, frame: Frame) -> None:
        if isinstance(frame, TurnStarted):
            self.voice = frame.voice

    async def handle(self, frame: Frame) -> AsyncIterator[Frame]:
        assert isinstance(frame, Sentence)
        text = speakable(frame.text)
        if self.failed or self.voice is None or not (text or frame.final):
            return
        if not text:  # the answer ended on something unspeakable: close the stream
            if self.seq:
                yield AudioOut(Speech(PCM.silence(0, self.rate), "", self.tts.name), self.seq, True)
            return
        started = time.perf_counter()
        try:
            speech = await self.tts.synthesize(text, self.voice)
        except TutorError as exc:
            self.failed = True
            yield NoticeFrame("speech_unavailable", f"The answer cannot be spoken: {exc.message}")
            return
        if speech.fallback and not self.noticed:
            self.noticed = True
            yield NoticeFrame("tts_fallback", FALLBACK_NOTICE)
        self.rate = speech.pcm.sample_rate
        yield AudioOut(speech, self.seq, frame.final, (time.perf_counter() - started) * 1000)
        self.seq += 1


def tts_stage(tts: TTS) -> Stage:
    """Sentences → speech, while the text keeps streaming."""
    return background_stage(Sentence, lambda: _Speaker(tts))


class _Animator:
    """Each spoken sentence, lip-synced on the tutor's avatar, as an MP4 segment."""

    def __init__(self, engine: LipSync) -> None:
        self.engine = engine
        self.avatar: AvatarFrames | None = None
        self.position = 0  # where in the avatar's idle loop the next sentence starts

    def observe(self, frame: Frame) -> None:
        if isinstance(frame, TurnStarted):
            self.avatar = frame.avatar

    def _segment(self, speech: Speech) -> tuple[bytes, int]:
        assert self.avatar is not None
        if not len(speech.pcm.samples):  # the answer's closing marker: one quiet frame
            frames = list(self.avatar.idle(self.position, 1, speech.pcm.sample_rate))
        else:
            frames = list(self.engine.render(self.avatar, speech, self.position))
        self.position += len(frames)
        return encode_mp4(frames, self.avatar.fps), len(frames)

    async def handle(self, frame: Frame) -> AsyncIterator[Frame]:
        assert isinstance(frame, AudioOut)
        if self.avatar is None:
            return
        started = time.perf_counter()
        mp4, count = await asyncio.to_thread(self._segment, frame.speech)
        ms = (time.perf_counter() - started) * 1000
        yield VideoOut(mp4, frame.seq, frame.final, count, self.avatar.fps, ms)


def lipsync_stage(engine: LipSync) -> Stage:
    """Speech → lip-synced video of the tutor's avatar; the audio flows on untouched."""
    return background_stage(AudioOut, lambda: _Animator(engine), passthrough=True)


async def _source(frames: Sequence[Frame]) -> AsyncIterator[Frame]:
    for frame in frames:
        yield frame


def run_pipeline(stages: Sequence[Stage], *frames: Frame) -> AsyncIterator[Frame]:
    stream: AsyncIterator[Frame] = _source(frames)
    for stage in stages:
        stream = stage(stream)
    return stream
