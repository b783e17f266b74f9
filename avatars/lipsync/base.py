"""The lip-sync interface: speech in, video frames out, each frame with its own 40 ms of audio.

An engine animates a prepared avatar (`AvatarFrames`): frame k of the avatar's idle loop is the
picture the tutor shows at time k/fps, speaking or not, so speech continues the loop where it
is and returns to it without a jump.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from app.speech.audio import PCM
from app.speech.tts import Speech
from avatars.prepare import loop_index


@dataclass(frozen=True)
class VideoFrame:
    image: np.ndarray  # RGB, size × size
    audio: PCM  # the audio that plays while this frame shows (1/fps s)
    index: int  # position in the avatar's endless idle loop


class AvatarFrames:
    """A prepared avatar, held as JPEG bytes (a 512 px frame is ~40 KB instead of 768 KB) and
    decoded as frames are drawn."""

    def __init__(self, avatar_id: str, folder: Path) -> None:
        import cv2

        info = json.loads((folder / "avatar.json").read_text())
        self.id = avatar_id
        self.fps: int = info["fps"]
        self.size: int = info["size"]
        self.count: int = info["frames"]
        self.mouths = np.array(info["mouths"], dtype=np.float32)
        self.faces = np.array(info["faces"], dtype=np.float32)  # x, y, w, h in the crop
        self.folder = folder
        self._jpegs = [(folder / "frames" / f"{i:05d}.jpg").read_bytes() for i in range(self.count)]
        self._decode = lambda data: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]

    def index(self, k: int) -> int:
        """Which stored frame shows at loop position k."""
        return loop_index(k, self.count)

    def frame(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The idle picture at loop position k, and its mouth box (cx, cy, w, h)."""
        i = self.index(k)
        return np.ascontiguousarray(self._decode(self._jpegs[i])), self.mouths[i]

    def idle(self, start: int, count: int, sample_rate: int) -> Iterator[VideoFrame]:
        """Silent frames of the idle loop: what the tutor shows while listening."""
        quiet = PCM.silence(1 / self.fps, sample_rate)
        for k in range(start, start + count):
            yield VideoFrame(self.frame(k)[0], quiet, k)


class LipSync(Protocol):
    name: str
    description: str

    def warmup(self) -> None: ...

    def render(self, avatar: AvatarFrames, speech: Speech, start: int) -> Iterator[VideoFrame]:
        """Frames for `speech`, from loop position `start`, one per 1/fps s of its audio."""
        ...


def audio_slices(pcm: PCM, fps: int) -> list[PCM]:
    """The speech cut into per-frame slices; the last is padded with silence."""
    step = pcm.sample_rate / fps
    count = max(1, int(np.ceil(len(pcm.samples) / step)))
    bounds = [round(i * step) for i in range(count + 1)]
    padded = np.concatenate([pcm.samples, np.zeros(bounds[-1] - len(pcm.samples) + 1, dtype=np.float32)])
    return [PCM(padded[bounds[i] : bounds[i + 1]], pcm.sample_rate) for i in range(count)]
