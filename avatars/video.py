"""Video segments: lip-synced frames and their audio as one MP4 (H.264 + AAC), the contract's
`video` message for clients without a WebRTC peer."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np

from app.core.media import VideoFrame


def encode_mp4(frames: list[VideoFrame], fps: int) -> bytes:
    import av

    buffer = io.BytesIO()
    rate = frames[0].audio.sample_rate
    with av.open(buffer, "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "tune": "zerolatency", "crf": "23"})
        height, width = frames[0].image.shape[:2]
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=rate, layout="mono")
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame.image, format="rgb24")):
                out.mux(packet)
        samples = np.concatenate([f.audio.to_int16() for f in frames])[None, :]
        sound = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        sound.sample_rate, sound.pts, sound.time_base = rate, 0, Fraction(1, rate)
        for stream, item in ((video, None), (audio, sound), (audio, None)):
            for packet in stream.encode(item):
                out.mux(packet)
    return buffer.getvalue()
