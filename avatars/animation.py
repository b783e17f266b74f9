"""The tutor's face through time, for every transport that shows it.

An `Animator` keeps the tutor's place in its avatar's idle loop: each sentence is lip-synced
from there, frame by frame as it is drawn, and the loop goes on from where the speech left
it, so the picture never jumps. The WebSocket draws a sentence whole into an MP4 segment, a
live call one frame just before it plays; both draw through this.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from app.core.engines import LipSync, PreparedAvatar
from app.core.media import PCM, Speech, VideoFrame, audio_slices

BLANK_SIZE = 256  # the grey picture of a tutor without an avatar
DEFAULT_FPS = 25


class Animator:
    def __init__(self, engine: LipSync | None, avatar: PreparedAvatar | None, fps: int = DEFAULT_FPS) -> None:
        self.engine = engine
        self.avatar = avatar
        self.fps = avatar.fps if avatar else fps
        self.position = 0  # the next loop position

    def use(self, avatar: PreparedAvatar | None) -> None:
        if avatar is not self.avatar:
            self.avatar = avatar
            self.fps = avatar.fps if avatar else self.fps

    def still(self, k: int) -> np.ndarray:
        """The idle picture at loop position k (grey without an avatar)."""
        if self.avatar is not None:
            return self.avatar.frame(k)[0]
        return np.full((BLANK_SIZE, BLANK_SIZE, 3), 24, dtype=np.uint8)

    def speak(self, speech: Speech) -> Iterator[VideoFrame]:
        """The sentence's frames, drawn as they are asked for; each carries its own audio."""
        start = self.position
        if self.avatar is not None and self.engine is not None:
            frames = self.engine.render(self.avatar, speech, start)
        else:
            still = self.still(start)
            frames = (VideoFrame(still, piece, start + n) for n, piece in enumerate(audio_slices(speech.pcm, self.fps)))
        for frame in frames:
            self.position = frame.index + 1
            yield frame

    def idle(self, sample_rate: int) -> VideoFrame:
        """The next silent frame of the idle loop: the tutor listening."""
        k = self.position
        self.position += 1
        return VideoFrame(self.still(k), PCM.silence(1 / self.fps, sample_rate), k)
