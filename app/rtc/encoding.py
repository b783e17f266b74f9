"""VP8 for rendered pictures: aiortc's encoder without libvpx's temporal denoiser.

aiortc tunes libvpx for a camera: `noise-sensitivity` 4 runs the denoiser on every frame. The
tutor's frames are drawn, not filmed, so there is no sensor noise to take out, and the denoiser
only blurs what is drawn: at 512 px, 500 kbit/s, it took 1.8 ms of the 4.3 ms a frame cost, and
without it the picture comes out closer to what was drawn (PSNR 37.0 → 38.8 dB on bench_webrtc's
avatar). Encoding was a third of the server's busy time with four calls speaking.

Everything else (rate control, bitrate changes from the browser's REMB, keyframes on PLI) stays
aiortc's own: the sender asks `get_encoder` for an encoder once a codec is negotiated, and only
VP8 gets this one.
"""

from __future__ import annotations

import functools
from typing import Any

# Merged over aiortc's options each time it opens a libvpx context (it reopens on a new size
# or bitrate).
OPTIONS = {"noise-sensitivity": "0"}


class _Tuned:
    """A libvpx context whose options always carry `OPTIONS`; everything else passes through."""

    __slots__ = ("_context",)

    def __init__(self, context: Any) -> None:
        object.__setattr__(self, "_context", context)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "options":
            value = {**value, **OPTIONS}
        setattr(self._context, name, value)


@functools.cache
def _rendered_vp8_class() -> type:
    from aiortc.codecs.vpx import Vp8Encoder

    class RenderedVp8(Vp8Encoder):
        @property
        def codec(self) -> Any:
            return self._tuned

        @codec.setter
        def codec(self, context: Any) -> None:
            self._tuned = None if context is None else _Tuned(context)

    return RenderedVp8


def rendered_vp8() -> Any:
    """aiortc's VP8 encoder whose libvpx contexts open with `OPTIONS`."""
    return _rendered_vp8_class()()


def install() -> None:
    """Give aiortc's senders `rendered_vp8()` for VP8 (any other codec: aiortc's own). Idempotent."""
    from aiortc import rtcrtpsender

    chosen = rtcrtpsender.get_encoder
    if getattr(chosen, "rendered", False):
        return

    def get_encoder(codec: Any) -> Any:
        return rendered_vp8() if codec.mimeType.lower() == "video/vp8" else chosen(codec)

    get_encoder.rendered = True  # type: ignore[attr-defined]
    rtcrtpsender.get_encoder = get_encoder
