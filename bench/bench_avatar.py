"""The embedded lip-sync engine: speed, first-frame latency, and audio/video sync.

    python -m bench.bench_avatar

1. Frames per second of the CPU warp engine at 256×256 and 512×512 crops, on one thread, and
   the share of a core one speaking session takes at 25 fps (target: >= 25 fps using at most
   half a core at 512); also with each sentence encoded to MP4 (the WebSocket `video` path).
2. First-frame latency: from a sentence's audio being handed over to its first frame.
3. Sync, measured on the delivered MP4 (decoded back): the mouth-opening signal read from the
   pixels (change against the idle frame inside the mouth box) against the audio envelope
   (RMS per 40 ms) from the AAC track, cross-correlated over ±10 frames. Target: 0 ± 1 frame.
   Control: the same video against the time-reversed audio, which must not look in sync.
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from app.speech.tts import PiperTTS
from avatars.frames import AvatarFrames
from avatars.lipsync.warp import WarpLipSync
from avatars.prepare import Limits, prepare
from avatars.video import encode_mp4
from bench.common import report
from tests.kit.media import av_lag, portrait_video

TEXT = (
    "Photosynthesis happens in the leaves. Light, water and carbon dioxide become sugar and oxygen. "
    "Maybe you can remember it as a recipe: sunlight is the oven, and the leaf is the kitchen."
)


def _avatar(folder: Path, size: int) -> AvatarFrames:
    video = portrait_video(folder / "teacher.mp4", seconds=4, size=(640, 480))
    prepare(video, folder / f"a{size}", Limits(size=size), lambda *_: None)
    return AvatarFrames(f"a{size}", folder / f"a{size}")


def speed(avatar: AvatarFrames, speech, engine: WarpLipSync) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    started = time.perf_counter()
    frames, first = [], None
    for frame in engine.render(avatar, speech, 0):
        first = first or time.perf_counter() - started
        frames.append(frame)
    render_wall, render_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    encode_mp4(frames, avatar.fps)
    encode_wall, encode_cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = len(frames)
    return {
        "crop": f"{avatar.size}×{avatar.size}",
        "frames": n,
        "render fps": round(n / render_wall),
        "render core share at 25 fps": f"{render_cpu / n * 25:.2f}",
        "render+MP4 fps": round(n / (render_wall + encode_wall)),
        "render+MP4 core share at 25 fps": f"{(render_cpu + encode_cpu) / n * 25:.2f}",
        "first frame (ms)": round(first * 1000, 1),
    }


def _signals(mp4: bytes, avatar: AvatarFrames) -> tuple[np.ndarray, np.ndarray]:
    with av.open(io.BytesIO(mp4)) as container:
        pictures = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(io.BytesIO(mp4)) as container:
        sound = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        rate = container.streams.audio[0].rate
    mouth = []
    for k, picture in enumerate(pictures):
        still, (cx, cy, mw, mh) = avatar.frame(k)
        box = (slice(int(cy - mh), int(cy + 2 * mh)), slice(int(cx - mw / 2), int(cx + mw / 2)))
        mouth.append(np.abs(picture[box].astype(np.float32) - still[box].astype(np.float32)).mean())
    step = rate / avatar.fps
    envelope = [np.sqrt(np.mean(sound[round(i * step) : round((i + 1) * step)] ** 2)) for i in range(len(pictures))]
    return np.array(mouth), np.array(envelope)


def main() -> None:
    piper = PiperTTS()
    piper.warmup()
    speech = piper._speak(TEXT)
    engine = WarpLipSync()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        avatars = {size: _avatar(Path(tmp), size) for size in (256, 512)}
        for avatar in avatars.values():
            speed(avatar, speech, engine)  # warm caches
            rows.append(speed(avatar, speech, engine))
        avatar = avatars[512]
        mp4 = encode_mp4(list(engine.render(avatar, speech, 0)), avatar.fps)
        mouth, envelope = _signals(mp4, avatar)
        lag, corr = av_lag(mouth, envelope)
        control_lag, control_corr = av_lag(mouth, envelope[::-1])
    sync = {
        "crop": "sync (512, delivered MP4)",
        "frames": len(mouth),
        "offset (frames)": lag,
        "correlation": round(corr, 3),
        "control: reversed audio offset": control_lag,
        "control correlation": round(control_corr, 3),
        "verdict": "in sync" if abs(lag) <= 1 and corr > 0.5 else "OUT OF SYNC",
        "control verdict": "in sync (measure broken)"
        if abs(control_lag) <= 1 and control_corr > 0.5
        else "fails, as it must",
    }
    report(
        "avatar",
        [*rows, sync],
        {
            "targets": {"fps_512": 25, "core_share_512": 0.5, "offset_frames": "0 ± 1"},
            "speech_seconds": speech.pcm.seconds,
        },
    )


if __name__ == "__main__":
    main()
