"""The tutor's side of a live call: what it says and shows, 25 frames a second, and the
student's microphone.

`Playout` holds the answer's speech, lip-synced lazily (a frame is drawn in a worker thread
just before it plays), and falls back to the avatar's idle loop while the tutor listens. Every
video frame carries its own 40 ms of audio, and the audio track is the clock: the picture
changes when the audio of its frame starts playing, so voice and lips cannot drift apart.
A barge-in flushes whatever is queued, and the next 20 ms are already silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fractions
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from app.core.engines import PreparedAvatar
from app.core.media import ASR_RATE, PCM, Speech, VideoFrame, resample
from avatars.animation import Animator

log = logging.getLogger(__name__)

AUDIO_RATE = 48_000  # Opus's clock: what WebRTC carries anyway
AUDIO_PTIME = 0.020
AUDIO_SAMPLES = int(AUDIO_RATE * AUDIO_PTIME)
VIDEO_CLOCK = 90_000
READY_FRAMES = 2  # drawn ahead of the clock: 80 ms of slack for the renderer


@dataclasses.dataclass(frozen=True)
class _Drawn:
    frame: VideoFrame
    picture: np.ndarray  # the frame's image as the video track sends it (I420)
    speech: bool
    generation: int  # a flush makes frames of older generations stale


def i420(image: np.ndarray) -> np.ndarray:
    """An RGB picture as I420 (YUV 4:2:0, even sides), what the VP8 encoder takes: converted
    in the drawing thread by OpenCV (0.3 ms at 512 px), not by the encoder's own colour
    conversion on the way out (1.7 ms, a fifth of a call's video cost in bench_webrtc's profile)."""
    import cv2

    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    return cv2.cvtColor(np.ascontiguousarray(image[:height, :width]), cv2.COLOR_RGB2YUV_I420)


class Playout:
    def __init__(self, animator: Animator) -> None:
        self.animator = animator
        self.image = animator.still(0)
        self.picture = i420(self.image)
        self.frames_shown = 0
        self.speech_frames_shown = 0
        self.underruns = 0  # 40 ms ticks where speech was due but not drawn in time
        self._lock = threading.Lock()  # the queue of speech is shared with the drawing thread
        self._speeches: deque[Speech] = deque()
        self._drawing: Iterator[VideoFrame] | None = None
        self._generation = 0
        self._ready: deque[_Drawn] = deque()  # drawn ahead of the clock, at most READY_FRAMES
        self._room = asyncio.Event()  # set when the clock took a frame: draw the next
        self._audio = np.zeros(0, dtype=np.int16)  # the current frame's audio still to play
        self._audio_is_speech = False
        self._task: asyncio.Task[None] | None = None

    # -- what to play --------------------------------------------------------------------
    def say(self, speech: Speech) -> None:
        """Queue a sentence: it plays after what is already queued."""
        if not len(speech.pcm.samples):
            return
        with self._lock:
            self._speeches.append(speech)
        # Idle frames drawn ahead would delay the answer: the next tick is the answer's.
        self._drop_ready(lambda drawn: not drawn.speech)

    @property
    def fps(self) -> int:
        return self.animator.fps

    def use_avatar(self, avatar: PreparedAvatar | None) -> None:
        with self._lock:
            self.animator.use(avatar)

    def flush(self) -> None:
        """Barge-in: drop every sentence queued, being drawn or drawn ahead."""
        with self._lock:
            self._speeches.clear()
            self._drawing = None
            self._generation += 1
        self._drop_ready(lambda drawn: True)
        self._audio = np.zeros(0, dtype=np.int16)
        self._audio_is_speech = False

    @property
    def speaking(self) -> bool:
        with self._lock:
            queued = bool(self._speeches) or self._drawing is not None
        return queued or self._audio_is_speech or any(d.speech for d in self._ready)

    def _drop_ready(self, which: Callable[[_Drawn], bool]) -> None:
        self._ready = deque(d for d in self._ready if not which(d))
        self._room.set()

    # -- drawing (worker thread) ---------------------------------------------------------
    def _render(self, speech: Speech) -> Iterator[VideoFrame]:
        yield from self.animator.speak(dataclasses.replace(speech, pcm=resample(speech.pcm, AUDIO_RATE)))

    def _draw(self) -> _Drawn:
        with self._lock:
            generation = self._generation
            if self._drawing is None and self._speeches:
                self._drawing = self._render(self._speeches.popleft())
            drawing = self._drawing
        if drawing is not None:
            frame = next(drawing, None)
            if frame is not None:
                return _Drawn(frame, i420(frame.image), True, generation)
            with self._lock:
                if self._drawing is drawing:
                    self._drawing = None
            return self._draw()
        idle = self.animator.idle(AUDIO_RATE)
        return _Drawn(idle, i420(idle.image), False, generation)

    async def _run(self) -> None:
        while True:
            while len(self._ready) >= READY_FRAMES:
                self._room.clear()
                await self._room.wait()
            drawn = await asyncio.to_thread(self._draw)
            if drawn.generation == self._generation:
                self._ready.append(drawn)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="playout")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the clock (the audio track) -----------------------------------------------------
    def next_audio(self) -> np.ndarray:
        """The next 20 ms, int16 at 48 kHz; taking a new frame's audio shows its picture."""
        if len(self._audio) < AUDIO_SAMPLES:
            drawn = self._ready.popleft() if self._ready else None
            self._room.set()
            if drawn is None:  # the renderer is behind: a moment of silence, the picture holds
                with self._lock:
                    self.underruns += bool(self._speeches) or self._drawing is not None
            else:
                self.image, self.picture = drawn.frame.image, drawn.picture
                self.frames_shown += 1
                self.speech_frames_shown += drawn.speech
                self._audio = np.concatenate([self._audio, drawn.frame.audio.to_int16()])
                self._audio_is_speech = drawn.speech
        piece, self._audio = self._audio[:AUDIO_SAMPLES], self._audio[AUDIO_SAMPLES:]
        if len(piece) < AUDIO_SAMPLES:
            piece = np.concatenate([piece, np.zeros(AUDIO_SAMPLES - len(piece), dtype=np.int16)])
        if not len(self._audio):
            self._audio_is_speech = self._audio_is_speech and bool(self._ready)
        return piece


class Paced:
    """Frames on a wall clock, as a real-time source sends them."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.count = 0
        self._start: float | None = None

    async def tick(self) -> int:
        if self._start is None:
            self._start = time.monotonic()
        else:
            self.count += 1
            wait = self._start + self.count * self.period - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        return self.count


def audio_frame(samples: np.ndarray, n: int) -> object:
    """The n-th 20 ms of a 48 kHz mono voice (int16) as an aiortc audio frame."""
    import av

    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = AUDIO_RATE
    frame.pts = n * AUDIO_SAMPLES
    frame.time_base = fractions.Fraction(1, AUDIO_RATE)
    return frame


def tutor_tracks(playout: Playout) -> tuple[object, object]:
    """The tutor's voice and face as aiortc tracks (imported here: aiortc is heavy)."""
    import av
    from aiortc import MediaStreamTrack

    class Voice(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self._clock = Paced(AUDIO_PTIME)

        async def recv(self) -> object:
            return audio_frame(playout.next_audio(), await self._clock.tick())

    class Face(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self._clock = Paced(1 / playout.fps)

        async def recv(self) -> av.VideoFrame:
            n = await self._clock.tick()
            frame = av.VideoFrame.from_ndarray(playout.picture, format="yuv420p")
            frame.pts = int(n * VIDEO_CLOCK / playout.fps)
            frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
            return frame

    return Voice(), Face()


class MicrophoneIn:
    """Received audio frames (48 kHz Opus, usually stereo s16) as 16 kHz mono float32 for the
    VAD and the recogniser. The low-pass filter keeps its state from frame to frame: filtering
    each 20 ms alone would click at every boundary."""

    def __init__(self) -> None:
        from scipy.signal import firwin

        self._taps = firwin(63, 7_600, fs=AUDIO_RATE).astype(np.float32)
        self._state = np.zeros(len(self._taps) - 1, dtype=np.float32)
        self._phase = 0

    def __call__(self, frame: object) -> np.ndarray:
        from scipy.signal import lfilter

        samples = frame.to_ndarray()  # type: ignore[attr-defined]
        channels = len(frame.layout.channels)  # type: ignore[attr-defined]
        data = samples.reshape(-1, channels) if samples.shape[0] == 1 else samples.T
        mono = data.astype(np.float32).mean(axis=1)
        if np.issubdtype(samples.dtype, np.integer):
            mono /= 32768.0
        rate = frame.sample_rate  # type: ignore[attr-defined]
        if rate != AUDIO_RATE:  # not what browsers send; correct, if less smooth
            return resample(PCM(mono, rate), ASR_RATE).samples
        filtered, self._state = lfilter(self._taps, 1.0, mono, zi=self._state)
        step = AUDIO_RATE // ASR_RATE
        out = filtered[self._phase :: step]
        self._phase = (self._phase - len(mono)) % step
        return out.astype(np.float32)


# aiortc holds four packets (80 ms) of incoming audio before it releases the first: a jitter
# buffer for playing it. The server does not play the student's voice, it listens for the end
# of the question, and one packet is enough to put the packets back in order: every turn then
# ends 60 ms sooner.
MICROPHONE_PREFETCH = 1
# A packet that never comes: aiortc waits until 16 later ones are in, then releases one frame
# per arriving packet, so the call stayed 14 packets (280 ms) behind for the rest of it. Here a
# packet still missing once this many later ones are in is taken as lost.
LOST_AFTER = 3


@functools.cache
def _prompt_buffer() -> type:
    from aiortc.jitterbuffer import JitterBuffer, JitterFrame

    class PromptBuffer(JitterBuffer):
        """For audio, where each packet is a frame: the oldest packet held goes once
        `prefetch` later ones are in, or `LOST_AFTER` if packets before it are missing."""

        def _remove_frame(self, sequence_number: int) -> Any:
            ring, origin = self._packets, self._origin
            held = [(n, p) for n in range(self._capacity) if (p := ring[(origin + n) % self._capacity]) is not None]
            if not held:
                return None
            at, packet = held[0]
            if len(held) - 1 < (self._prefetch if at == 0 else LOST_AFTER):
                return None
            self.remove(at + 1)
            return JitterFrame(data=packet._data, timestamp=packet.timestamp)

    return PromptBuffer


def listen_promptly(receiver: object) -> None:
    """Give a call's microphone receiver (an aiortc `RTCRtpReceiver`) a jitter buffer of
    `MICROPHONE_PREFETCH` packets that gives up on a lost one after `LOST_AFTER`; before any
    packet has arrived."""
    from aiortc.jitterbuffer import JitterBuffer

    name = "_RTCRtpReceiver__jitter_buffer"  # aiortc's own: pinned in requirements.txt
    buffer = getattr(receiver, name, None)
    if not isinstance(buffer, JitterBuffer):
        log.warning("aiortc's receiver has no jitter buffer where expected: the microphone keeps its 80 ms")
        return
    setattr(receiver, name, _prompt_buffer()(capacity=buffer.capacity, prefetch=MICROPHONE_PREFETCH))
