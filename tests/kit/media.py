"""Videos for tests, made here: a real portrait (scikit-image's astronaut) that moves a little,
as a teacher's webcam clip would, plus the bad inputs an upload form meets."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def portrait_video(
    path: Path, seconds: float = 3.0, fps: int = 25, size: tuple[int, int] = (640, 480), faces: int = 1
) -> Path:
    import av
    import cv2
    from skimage import data

    face = data.astronaut()  # 512×512, one frontal face
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(round(seconds * fps)):
            canvas = np.full((height, width, 3), 235, dtype=np.uint8)
            side = min(height, width // faces)
            for n in range(faces):
                dx = int(6 * np.sin(i / 9))  # a gentle sway, like a person on a webcam
                tile = cv2.resize(face, (side, side))
                left = min(max(0, n * side + (width // faces - side) // 2 + dx), width - side)
                canvas[height - side :, left : left + side] = tile
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def av_lag(video: np.ndarray, audio: np.ndarray, span: int = 10) -> tuple[int, float]:
    """Audio/video sync: the shift (frames) at which a video signal (the mouth opening) and
    an audio one (the envelope) agree best, and how well; positive: the video is late."""
    v, a = (video - video.mean()) / (video.std() + 1e-9), (audio - audio.mean()) / (audio.std() + 1e-9)
    best = max(range(-span, span + 1), key=lambda s: _correlation(v, a, s))
    return best, _correlation(v, a, best)


def _correlation(v: np.ndarray, a: np.ndarray, shift: int) -> float:
    if shift >= 0:
        x, y = v[shift:], a[: len(a) - shift]
    else:
        x, y = v[:shift], a[-shift:]
    n = min(len(x), len(y))
    return float(np.mean(x[:n] * y[:n]))
