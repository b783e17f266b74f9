"""A prepared avatar's frames, as the lip-sync engines and the transports draw them.

Frame k of the avatar's idle loop is the picture the tutor shows at time k/fps, speaking or
not, so speech continues the loop where it is and returns to it without a jump.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np

from avatars.prepare import loop_index

# Decoded frames kept for every call and answer that shows them: two 512 px avatars' 8 s loops.
DECODED_BUDGET_BYTES = 320 * 2**20


class Decoded:
    """Decoded pictures shared by everyone drawing them, the least recently used dropped past
    a budget. Decoding a 512 px JPEG is 2.2 ms, a quarter of what a live call's frame cost on
    two cores (bench_webrtc's profile), and every call of a tutor draws the same loop."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.used = 0
        self._images: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, decode: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            image = self._images.get(key)
            if image is not None:
                self._images.move_to_end(key)
                return image
        image = decode()
        image.setflags(write=False)  # shared: whoever draws on it draws on a copy
        with self._lock:
            if key not in self._images:
                self._images[key] = image
                self.used += image.nbytes
            while self.used > self.budget and len(self._images) > 1:
                _, dropped = self._images.popitem(last=False)
                self.used -= dropped.nbytes
            return self._images.get(key, image)


DECODED = Decoded(DECODED_BUDGET_BYTES)


class AvatarFrames:
    """A prepared avatar, held as JPEG bytes (a 512 px frame is ~40 KB instead of 768 KB) and
    decoded as frames are drawn, the decoded ones shared (`DECODED`)."""

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
        self._decode = lambda data: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
        self._key = object()  # this preparation's: an avatar made again under its id is another

    def index(self, k: int) -> int:
        """Which stored frame shows at loop position k."""
        return loop_index(k, self.count)

    def frame(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The idle picture at loop position k (read-only: shared), and its mouth box (cx, cy, w, h)."""
        i = self.index(k)
        return DECODED.get((self._key, i), lambda: self._decode(self._jpegs[i])), self.mouths[i]
