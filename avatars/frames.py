"""A prepared avatar's frames, as the lip-sync engines and the transports draw them.

Frame k of the avatar's idle loop is the picture the tutor shows at time k/fps, speaking or
not, so speech continues the loop where it is and returns to it without a jump.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from avatars.prepare import loop_index


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
