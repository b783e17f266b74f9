"""Avatar preparation: a teacher's video → what the lip-sync engines need.

Decode (PyAV) the first `loop_seconds` at 25 fps, find the one face in every frame (OpenCV's
Haar cascade), fix a square crop around it (steady, so the background does not swim), and
store, in the avatar's folder:

    frames/00000.jpg …   the cropped frames, `size`×`size`, RGB as JPEG
    idle.mp4             the idle loop (forward then backward, so it never jumps), H.264
    avatar.json          fps, frame count, size, crop in the source, per-frame face and mouth
                         boxes (crop pixels), and what each lip-sync engine prepared

Everything is written to `<folder>.tmp` and renamed into place at the end: a failure leaves
nothing half-written. Bad input fails with a reason a teacher can act on.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Progress = Callable[[str, float], None]


class PreparationFailed(Exception):
    """The video cannot become an avatar; the message says why, for the teacher."""


@dataclass(frozen=True)
class Limits:
    size: int = 512
    fps: int = 25
    loop_seconds: float = 8.0
    max_video_seconds: float = 600.0
    max_width: int = 1920
    max_height: int = 1080


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _decode(source: Path, limits: Limits, progress: Progress) -> list[np.ndarray]:
    import av

    try:
        container = av.open(str(source))
    except Exception as exc:  # PyAV raises one of many for non-media input
        head = source.read_bytes()[:12]
        if head[4:8] == b"ftyp" or head.startswith((b"\x1aE\xdf\xa3", b"RIFF")):
            raise PreparationFailed("the video file is corrupt or incomplete (was the upload cut short?)") from None
        raise PreparationFailed(f"this is not a video file this server can read ({type(exc).__name__})") from None
    with container:
        if not container.streams.video:
            raise PreparationFailed("the file has no video track")
        stream = container.streams.video[0]
        duration = container.duration / 1_000_000 if container.duration else None
        if duration is None and stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        if duration and duration > limits.max_video_seconds:
            raise PreparationFailed(
                f"the video is {_clock(duration)} long; the limit is {_clock(limits.max_video_seconds)} "
                f"(only the first {limits.loop_seconds:g} s are used): trim it first"
            )
        width, height = stream.codec_context.width, stream.codec_context.height
        if max(width, height) > max(limits.max_width, limits.max_height) or width * height > (
            limits.max_width * limits.max_height
        ):
            raise PreparationFailed(
                f"the video is {width}×{height}; the limit is {limits.max_width}×{limits.max_height}: "
                "export it at 1080p or lower"
            )
        wanted = max(1, round(limits.loop_seconds * limits.fps))
        frames: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else len(frames) / limits.fps
                # Keep the frame nearest each 40 ms tick: any source rate becomes 25 fps.
                while len(frames) < wanted and t + 0.5 / limits.fps >= len(frames) / limits.fps:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    progress("decoding", 0.35 * len(frames) / wanted)
                if len(frames) >= wanted:
                    break
        except Exception as exc:
            if len(frames) < limits.fps:
                raise PreparationFailed(f"the video is corrupt or truncated ({type(exc).__name__}: {exc})") from None
    if len(frames) < limits.fps:
        raise PreparationFailed("the video is shorter than one second; an avatar needs a few seconds")
    return frames


def _faces(frames: list[np.ndarray], progress: Progress) -> list[list[tuple[float, float, float, float]]]:
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found = []
    for i, frame in enumerate(frames):
        scale = min(1.0, 480 / min(frame.shape[:2]))
        gray = cv2.cvtColor(cv2.resize(frame, None, fx=scale, fy=scale), cv2.COLOR_RGB2GRAY)
        gray = cv2.equalizeHist(gray)
        side = min(gray.shape)
        boxes = cascade.detectMultiScale(gray, 1.1, 5, minSize=(max(24, side // 12),) * 2)
        found.append(sorted((tuple(float(v) / scale for v in b) for b in boxes), key=lambda b: -b[2] * b[3]))
        progress("finding the face", 0.35 + 0.3 * (i + 1) / len(frames))
    return found


def _track(found: list[list[tuple[float, float, float, float]]]) -> np.ndarray:
    n = len(found)
    with_face = [i for i, boxes in enumerate(found) if boxes]
    if len(with_face) < 0.5 * n:
        raise PreparationFailed(
            f"no face found (a face was seen in {len(with_face)} of {n} frames): "
            "the video needs one person facing the camera, well lit"
        )
    several = sum(1 for boxes in found if len(boxes) > 1 and boxes[1][2] >= 0.5 * boxes[0][2])
    if several >= 0.3 * n:
        raise PreparationFailed(f"several faces (two or more in {several} of {n} frames): film one person only")
    track = np.array([found[i][0] if found[i] else (np.nan,) * 4 for i in range(n)], dtype=float)
    for column in range(4):  # frames where the detector blinked: the nearest seen box
        values = track[:, column]
        missing = np.isnan(values)
        values[missing] = np.interp(np.flatnonzero(missing), np.flatnonzero(~missing), values[~missing])
    # A running median: the detector's jitter must not make the mouth region jump.
    padded = np.pad(track, ((2, 2), (0, 0)), mode="edge")
    return np.median(np.stack([padded[k : k + n] for k in range(5)]), axis=0)


def _crop_box(track: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int]:
    height, width = shape[:2]
    x, y, w, h = np.median(track, axis=0)
    side = min(2.0 * w, width, height)
    cx, cy = x + w / 2, y + h / 2 + 0.12 * h  # a little lower: chin and jaw must be in the picture
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, int(side)


def mouth_box(face: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """Centre x, centre y, width, height of the mouth, from a frontal face box (the Haar box
    spans brows to upper chin; the mouth sits at ~77 % of its height)."""
    x, y, w, h = face
    return x + w / 2, y + 0.77 * h, 0.46 * w, 0.2 * h


def prepare(
    source: Path, target: Path, limits: Limits, progress: Progress, extra: Callable[..., dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Prepare `source` into the folder `target` (replaced if it exists). `extra(frames, info,
    folder)` lets an engine such as MuseTalk add its own data; it returns a dict for the info."""
    import av
    import cv2

    work = target.with_name(target.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    try:
        frames = _decode(source, limits, progress)
        track = _track(_faces(frames, progress))
        left, top, side = _crop_box(track, frames[0].shape)
        scale = limits.size / side
        (work / "frames").mkdir(parents=True)
        faces, mouths = [], []
        crops = []
        for i, frame in enumerate(frames):
            crop = cv2.resize(frame[top : top + side, left : left + side], (limits.size, limits.size), cv2.INTER_AREA)
            crops.append(crop)
            cv2.imwrite(str(work / "frames" / f"{i:05d}.jpg"), crop[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
            x, y, w, h = track[i]
            face = ((x - left) * scale, (y - top) * scale, w * scale, h * scale)
            faces.append([round(v, 1) for v in face])
            mouths.append([round(v, 1) for v in mouth_box(face)])
            progress("cropping", 0.65 + 0.2 * (i + 1) / len(frames))
        with av.open(str(work / "idle.mp4"), "w") as out:
            stream = out.add_stream("libx264", rate=limits.fps, options={"preset": "veryfast", "crf": "23"})
            stream.width = stream.height = limits.size
            stream.pix_fmt = "yuv420p"
            for i, crop in enumerate(crops + crops[-2:0:-1]):  # forward, then backward: a seamless loop
                for packet in stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")):
                    out.mux(packet)
                progress("building the idle loop", 0.85 + 0.1 * i / (2 * len(crops)))
            for packet in stream.encode(None):
                out.mux(packet)
        info: dict[str, Any] = {
            "fps": limits.fps,
            "frames": len(frames),
            "size": limits.size,
            "loop_frames": max(1, 2 * len(frames) - 2),
            "source_crop": {"left": left, "top": top, "side": side},
            "faces": faces,
            "mouths": mouths,
        }
        if extra is not None:
            info.update(extra(crops, info, work))
        (work / "avatar.json").write_text(json.dumps(info))
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
        progress("ready", 1.0)
        return info
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def loop_index(k: int, frames: int) -> int:
    """Frame k of the endless forward-backward loop over `frames` frames."""
    if frames <= 1:
        return 0
    period = 2 * frames - 2
    k %= period
    return k if k < frames else period - k
