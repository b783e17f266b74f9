"""The stages of a turn, in the order they run: hear, begin the turn, generate, cut into
sentences, speak, lip-sync. Each handles its own kind of frame; see `pipeline` for how they
are chained."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing

from app.conversation.frames import (
    AnswerText,
    AudioOut,
    Frame,
    Grounded,
    LLMRequest,
    NoticeFrame,
    Sentence,
    SpeechIn,
    TextDelta,
    Transcription,
    TurnStarted,
    UserText,
    VideoOut,
)
from app.conversation.language import judged, leans_to, written_in
from app.conversation.pipeline import Stage
from app.conversation.prompt import OFF_LANGUAGE, said
from app.conversation.repeats import Repeats
from app.core.engines import ASR, TTS, VAD, LipSync, ListenFor, LLMEngine, Notice
from app.core.errors import TutorError
from app.core.media import PCM, Speech, Voice, trimmed
from app.speech.sentences import SentenceSplitter, ends_mid_phrase, rejoin, speakable
from app.speech.tts import FALLBACK_NOTICE, LAST_RESORT_NOTICE, EspeakTTS
from app.speech.vad import speech_seconds
from app.speech.vocabulary import hear
from avatars.animation import Animator
from avatars.video import encode_mp4
from kb.grounding import Grounding

log = logging.getLogger(__name__)


class Recognise(Stage):
    """A spoken question → what was said. A recording with no speech in it gets an empty
    transcription (Whisper would invent words in silence or noise) and ends the turn."""

    accepts = (SpeechIn,)

    def __init__(
        self,
        asr: ASR,
        vad: VAD,
        listen_for: Callable[[], Awaitable[ListenFor]],
        *,
        threshold: float,
        min_speech: float,
    ) -> None:
        self.asr, self.vad, self.listen_for = asr, vad, listen_for
        self.threshold, self.min_speech = threshold, min_speech

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        assert isinstance(frame, SpeechIn)
        if frame.early is not None:  # the VAD already heard speech here
            transcript = await frame.early
        else:
            heard = frame.heard
            if heard is None:
                heard = await asyncio.to_thread(speech_seconds, self.vad, frame.pcm, self.threshold)
            if heard < self.min_speech:
                yield Transcription("", audio_seconds=frame.pcm.seconds)
                yield NoticeFrame("no_speech", "No speech was heard in the recording; please try again.")
                return
            listen = await self.listen_for()
            transcript = await asyncio.to_thread(hear, self.asr, frame.pcm, listen)
        yield Transcription(transcript.text, transcript.language, transcript.audio_seconds, transcript.elapsed_ms)
        if transcript.text:
            meta = {
                "spoken": True,
                "asr_ms": round(transcript.elapsed_ms, 1),
                "language": transcript.language,
                "recognised_in_pause": frame.early is not None,
            }
            if transcript.first_heard:  # heard again for the course's words: what it replaced
                meta["first_heard"] = transcript.first_heard
            yield UserText(transcript.text, meta)
        else:
            yield NoticeFrame("no_speech", "The recording could not be understood; please try again.")


class Begin(Stage):
    """The student's words → who answers and the prompt, read and written in one trip off
    the event loop (or the whole answer, when it needs no model)."""

    accepts = (UserText,)

    def __init__(self, begin: Callable[[UserText], list[Frame]]) -> None:
        self.begin = begin

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        assert isinstance(frame, UserText)
        for begun in await asyncio.to_thread(self.begin, frame):
            yield begun


class Generate(Stage):
    """The prompt → the answer, streamed piece by piece, then whole; a loop ends it."""

    accepts = (LLMRequest,)

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        assert isinstance(frame, LLMRequest)
        started = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        repeats = Repeats()  # a small model's loops (`repeats`) are neither shown nor spoken
        # aclosing: a barge-in must stop the engine now, not when the GC gets to it.
        async with aclosing(self.engine.stream(frame.messages, frame.options)) as stream:  # type: ignore[type-var]
            async for piece in stream:
                if isinstance(piece, Notice):
                    yield NoticeFrame(piece.code, piece.text)
                    continue
                if not piece:
                    continue
                if first is None:
                    first = time.perf_counter()
                if kept := repeats.push(piece):
                    parts.append(kept)
                    yield TextDelta(kept)
                if repeats.looped:
                    break  # the rest is the loop: the engine stops as the stream closes
        if rest := repeats.flush():
            parts.append(rest)
            yield TextDelta(rest)
        if repeats.left_out:
            log.info("left %d characters of a looping or repeating answer out", repeats.left_out)
        yield AnswerText(
            "".join(parts).strip(),
            sources=frame.sources,
            first_token_ms=None if first is None else (first - started) * 1000,
            total_ms=(time.perf_counter() - started) * 1000,
            engine=self.engine.name,  # after the stream: names the fallback if one answered
            model=frame.options.model,
            left_out=repeats.left_out,
        )


class KeepLanguage(Stage):
    """The model's answer stays in the tutor's language: a small model drifts (SmolLM2 asked in
    Chinese answers in English). What leans to the tutor's script flows on at once, exactly as
    written; what leans away is held until the answer has words enough to tell (`written_in`).
    An answer in another language is then neither shown nor spoken: a grounded turn falls to
    its evidence (which `Check` then quotes) and any other says, in the tutor's language, that
    it could not answer. Answers that never reached the model (quotes of the material,
    refusals), answers too short to tell and turns with no language pass untouched."""

    accepts = (TextDelta, AnswerText)

    def __init__(self) -> None:
        self.language, self.grounded = "", False
        self.so_far = ""
        self.held: list[str] = []
        self.verdict: bool | None = None

    def observe(self, frame: Frame) -> None:
        if isinstance(frame, TurnStarted):
            self.language = frame.language
        elif isinstance(frame, Grounded):
            self.grounded = True

    def _release(self, text: str) -> TextDelta:
        """`text`, with what was held before it."""
        released, self.held = "".join([*self.held, text]), []
        return TextDelta(released)

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if not judged(self.language):
            yield frame
            return
        if isinstance(frame, TextDelta):
            if self.verdict is None:
                self.so_far += frame.text
                self.verdict = written_in(self.so_far, self.language)
            if self.verdict or (self.verdict is None and leans_to(self.so_far, self.language)):
                yield self._release(frame.text)
            else:
                self.held.append(frame.text)  # until the verdict; withheld after a False one
            return
        assert isinstance(frame, AnswerText)
        if self.verdict is not False:
            if self.held:  # too short to tell
                yield TextDelta("".join(self.held))
            yield frame
            return
        withheld = len("".join(self.held))
        log.info("withheld %d characters of an answer not in %s", withheld, self.language)
        if self.grounded:
            yield dataclasses.replace(frame, text="", off_language=withheld)
            return
        apology = said(OFF_LANGUAGE, self.language)
        yield TextDelta(apology)
        yield dataclasses.replace(frame, text=apology, sources=[], off_language=withheld)


class Check(Stage):
    """A phrased answer to a question about the material keeps only what its evidence
    supports, sentence by sentence as it streams: the first sentence that says more than the
    material ends it. When nothing survives, the evidence itself is the answer. Answers with
    no `Grounded` frame before them need no material and pass untouched."""

    accepts = (Grounded, TextDelta, AnswerText)

    def __init__(self) -> None:
        self.grounding: Grounding | None = None
        self.splitter = SentenceSplitter(max_chars=10_000, first_min_chars=None)
        self.kept: list[str] = []
        self.cut = False

    def _checked(self, sentences: list[str]) -> list[str]:
        assert self.grounding is not None
        passed = []
        for sentence in sentences:
            if self.cut or not self.grounding.supports(sentence):
                self.cut = True
                continue
            passed.append(sentence)
        self.kept += passed
        return passed

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if isinstance(frame, Grounded):
            self.grounding = frame.grounding
            return
        grounding = self.grounding
        if grounding is None:
            yield frame
            return
        if isinstance(frame, TextDelta):
            for sentence in self._checked(self.splitter.push(frame.text)):
                yield TextDelta(sentence + " ")
            return
        assert isinstance(frame, AnswerText)
        rest = self._checked([last] if (last := self.splitter.flush()) else [])
        if rest:
            yield TextDelta(rest[0])
        summary = {**grounding.summary(), "dropped": self.cut}
        if self.kept:
            yield dataclasses.replace(frame, text=rejoin(self.kept), grounding={**summary, "style": "phrased"})
            return
        yield TextDelta(grounding.quote)
        yield dataclasses.replace(frame, text=grounding.quote, grounding={**summary, "style": "quoted"})


class Sentences(Stage):
    """Streamed text → sentences. An answer that arrives whole (one that never reached the
    model) is split the same way."""

    accepts = (TextDelta, AnswerText)

    def __init__(self, max_chars: int = 160) -> None:
        self.max_chars = max_chars
        self.splitter = SentenceSplitter(max_chars)
        self.streamed = False

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        yield frame
        if isinstance(frame, TextDelta):
            self.streamed = True
            for sentence in self.splitter.push(frame.text):
                yield Sentence(sentence)
            return
        assert isinstance(frame, AnswerText)
        if not self.streamed:
            for sentence in self.splitter.push(frame.text):
                yield Sentence(sentence)
        yield Sentence(self.splitter.flush(), final=True)
        self.splitter, self.streamed = SentenceSplitter(self.max_chars), False


# The silence a voice puts before each piece it speaks is cut to this: it only delays the answer.
LEAD_SECONDS = 0.01
# After a piece cut mid-phrase (the first phrase, a run-on), the silence the voice ends it
# with is cut to a phrase's pause: left whole, with the next piece's lead-in, it was 0.15-0.25 s.
PHRASE_PAUSE_SECONDS = 0.05


class Speak(Stage):
    """Sentences → speech, while the text keeps streaming. A voice that fails mid-answer
    costs the rest of that answer's audio, never its text."""

    accepts = (Sentence,)
    background = True

    def __init__(self, tts: TTS) -> None:
        self.tts = tts
        self.voice: Voice | None = None
        self.spoken: dict[str, asyncio.Future[Speech]] = {}
        self.seq, self.noticed, self.failed, self.rate = 0, False, False, 16_000

    def observe(self, frame: Frame) -> None:
        if isinstance(frame, TurnStarted):
            self.voice, self.spoken = frame.voice, dict(frame.spoken)

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
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
            foreseen = await self._foreseen(text)
            speech = foreseen or await self.tts.synthesize(text, self.voice)
        except TutorError as exc:
            self.failed = True
            yield NoticeFrame("speech_unavailable", f"The answer cannot be spoken: {exc.message}")
            return
        speech = trimmed(speech, LEAD_SECONDS, PHRASE_PAUSE_SECONDS if ends_mid_phrase(text) else None)
        if speech.fallback and not self.noticed:
            self.noticed = True
            last_resort = speech.engine == EspeakTTS.name
            yield NoticeFrame("tts_fallback", LAST_RESORT_NOTICE if last_resort else FALLBACK_NOTICE)
        self.rate = speech.pcm.sample_rate
        # Spoken ahead: its synthesis time is not this turn's (0 is left out of the metrics).
        synth_ms = 0.0 if foreseen else (time.perf_counter() - started) * 1000
        yield AudioOut(speech, self.seq, frame.final, synth_ms)
        self.seq += 1

    async def _foreseen(self, text: str) -> Speech | None:
        """The sentence as spoken while the turn was held, where that went well."""
        speaking = self.spoken.pop(text, None)
        if speaking is None:
            return None
        try:
            return await speaking
        except Exception:
            return None  # spoken again now, and its error told as any other


class Animate(Stage):
    """Speech → the tutor's avatar saying it, one MP4 segment (H.264 + AAC) per sentence;
    the audio flows on untouched."""

    accepts = (AudioOut,)
    background = True
    passthrough = True

    def __init__(self, engine: LipSync) -> None:
        self.engine = engine
        self.animator: Animator | None = None

    def observe(self, frame: Frame) -> None:
        if isinstance(frame, TurnStarted):
            self.animator = Animator(self.engine, frame.avatar) if frame.avatar is not None else None

    def _segment(self, speech: Speech) -> tuple[bytes, int]:
        animator = self.animator
        assert animator is not None
        if not len(speech.pcm.samples):  # the answer's closing marker: one quiet frame
            frames = [animator.idle(speech.pcm.sample_rate)]
        else:
            frames = list(animator.speak(speech))
        return encode_mp4(frames, animator.fps), len(frames)

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        assert isinstance(frame, AudioOut)
        if self.animator is None:
            return
        started = time.perf_counter()
        mp4, count = await asyncio.to_thread(self._segment, frame.speech)
        ms = (time.perf_counter() - started) * 1000
        yield VideoOut(mp4, frame.seq, frame.final, count, self.animator.fps, ms)
