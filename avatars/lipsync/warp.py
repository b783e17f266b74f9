"""The embedded lip-sync engine: no weights, CPU only, driven by the speech itself.

For each 40 ms frame the mouth opening comes from the loudness of that frame's own audio
(fast to open, slower to close), shaped by the phoneme being spoken when the TTS reports
timings (Piper does): lips shut on p/b/m, nearly shut on f/v, narrow and round on o/u/w, wide
on i/e, open on a. Silence closes the mouth. The real avatar frame is then warped around its
mouth: the jaw and lower lip move down, the upper lip a little up, the corners in or out,
and a soft dark opening appears between the lips.

Its limits, plainly: it moves the lower face of one frontal picture; it cannot make teeth or
tongue, or turn the head. It is a readable, in-sync mouth, not a photoreal one (that is what
MuseTalk is for).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from app.core.engines import PreparedAvatar
from app.core.media import Phoneme, Speech, VideoFrame, audio_slices

_CLOSED = set("pbm")
_LABIODENTAL = set("fv")
_ROUND = set("ouwɔʊɒ")
_SPREAD = set("ieɪɛæj")
_OPEN = set("aɑʌɐæ")
_PAUSE = set(" .,!?;:—-^$_")


def _viseme(symbol: str) -> tuple[float, float]:
    """(gain on the opening, width factor) of a phoneme."""
    base = symbol[:1]
    if base in _CLOSED:
        return 0.0, 1.0
    if base in _LABIODENTAL:
        return 0.15, 1.0
    if base in _ROUND:
        return 0.75, 0.82
    if base in _OPEN:
        return 1.1, 1.0
    if base in _SPREAD:
        return 0.75, 1.1
    if base in _PAUSE:
        return 0.3, 1.0
    return 0.85, 1.0


def _follow(target: np.ndarray) -> np.ndarray:
    out, level = np.zeros_like(target), 0.0
    for i, value in enumerate(target):
        level += (0.75 if value > level else 0.45) * (value - level)
        out[i] = level
    return out


def mouth_track(speech: Speech, fps: int) -> tuple[np.ndarray, np.ndarray]:
    """Opening (0..1) and width factor per frame of `speech`."""
    slices = audio_slices(speech.pcm, fps)
    rms = np.array([np.sqrt(np.mean(s.samples**2)) if len(s.samples) else 0.0 for s in slices])
    db = 20 * np.log10(np.maximum(rms, 1e-5))
    target = np.clip((db + 48) / 30, 0, 1)
    # Quick to open, slower to close; run forwards and backwards and averaged, so the smoothing
    # adds no delay (the whole sentence is known before its first frame is drawn).
    opening = 0.5 * (_follow(target) + _follow(target[::-1])[::-1])
    width = np.ones_like(opening)
    if speech.phonemes:
        phonemes: tuple[Phoneme, ...] = speech.phonemes
        starts = np.array([p.start for p in phonemes])
        for i in range(len(opening)):
            at = (i + 0.5) / fps
            j = int(np.searchsorted(starts, at, side="right")) - 1
            if 0 <= j < len(phonemes) and at < phonemes[j].start + phonemes[j].duration:
                gain, width[i] = _viseme(phonemes[j].symbol)
                opening[i] = min(1.0, opening[i] * gain)
    return opening, width


class WarpLipSync:
    name = "warp"
    description = "audio-driven mouth warp (CPU, no model weights)"

    def warmup(self) -> None:
        import cv2  # noqa: F401  (fail here, at start-up, if OpenCV is missing)

    def render(self, avatar: PreparedAvatar, speech: Speech, start: int) -> Iterator[VideoFrame]:
        opening, width = mouth_track(speech, avatar.fps)
        for n, audio in enumerate(audio_slices(speech.pcm, avatar.fps)):
            image, mouth = avatar.frame(start + n)
            yield VideoFrame(warp_mouth(image, mouth, float(opening[n]), float(width[n])), audio, start + n)


def warp_mouth(image: np.ndarray, mouth: np.ndarray, opening: float, width: float) -> np.ndarray:
    import cv2

    if opening < 0.02 and abs(width - 1) < 0.02:
        return image
    cx, cy, mw, mh = (float(v) for v in mouth)
    height, full_width = image.shape[:2]
    x0, x1 = int(max(0, cx - 0.95 * mw)), int(min(full_width, cx + 0.95 * mw))
    y0, y1 = int(max(0, cy - 0.9 * mh)), int(min(height, cy + 2.8 * mh))
    xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    u, v = (xs - cx) / (0.55 * mw), (ys - cy) / mh  # mouth-relative coordinates
    across = np.exp(-(u**2))
    drop = opening * 0.5 * mh
    # Below the lips the jaw moves down, fading out towards the neck; above, the upper lip rises a little.
    below = np.clip((v + 0.1) / 0.45, 0, 1) * np.clip((2.8 - v) / 2.3, 0, 1)
    above = np.exp(-(((v + 0.35) / 0.3) ** 2)) * (v < 0)
    dy = drop * across * below - 0.2 * drop * across * above
    lips = np.exp(-((v / 0.8) ** 2))
    src_x = cx + (xs - cx) / (1 + (width - 1) * lips)
    roi = cv2.remap(image, src_x, ys - dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if drop > 0.5:
        # The opening between the lips: a soft dark ellipse, as deep as the jaw dropped, drawn
        # and blended over its own box only (over the whole warped region it was half the warp).
        axes = (max(1, int(0.34 * mw * width)), max(1, int(0.4 * drop)))
        sigma = max(1.0, 0.12 * axes[1] + 1)
        margin = int(3 * sigma) + 1
        ex, ey = int(round(cx - x0)), int(round(cy - y0 + 0.6 * drop))
        bx0, bx1 = max(0, ex - axes[0] - margin), min(roi.shape[1], ex + axes[0] + margin + 1)
        by0, by1 = max(0, ey - axes[1] - margin), min(roi.shape[0], ey + axes[1] + margin + 1)
        if bx1 > bx0 and by1 > by0:
            hole = np.zeros((by1 - by0, bx1 - bx0), dtype=np.float32)
            cv2.ellipse(hole, (ex - bx0, ey - by0), axes, 0, 0, 360, 1.0, -1)
            alpha = cv2.GaussianBlur(hole, (0, 0), sigma)[..., None] * min(1.0, 1.5 * opening)
            inside = np.array([60, 22, 26], dtype=np.float32)
            box = roi[by0:by1, bx0:bx1].astype(np.float32)
            roi[by0:by1, bx0:bx1] = (box * (1 - alpha) + inside * alpha).astype(np.uint8)
    out = image.copy()
    out[y0:y1, x0:x1] = roi
    return out
