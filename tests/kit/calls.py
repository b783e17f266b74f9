"""A student's side of a live call, on aiortc, relay-only (tests and benchmarks): it speaks into
its microphone track and records what comes back, with arrival times."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.core.media import PCM, resample
from app.rtc.media import Paced, audio_frame
from tests.kit.live import free_port
from turn.coturn import Coturn, CoturnConfig

RATE = 48_000
PTIME = 0.02
SAMPLES = int(RATE * PTIME)
LOUD = 0.02  # RMS above this is the tutor's voice, not silence or Opus noise


def free_udp_range(size: int) -> int:
    """A run of `size` free UDP ports (coturn's relay range), below the kernel's ephemeral
    range: there, any socket bound to port 0 (an ICE host candidate, a browser) can take one of
    a 5-port range's ports while the test runs, and the range runs dry."""
    import socket
    from pathlib import Path

    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32_768
    for base in range(max(1_024, low - 12_000), low - size, size):
        sockets = []
        try:
            for port in range(base, base + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free UDP range")


def loopback_coturn(secret: str, ports: int = 5, max_allocate_lifetime: int = 60) -> Coturn:
    low = free_udp_range(ports)
    return Coturn(
        CoturnConfig(
            secret=secret,
            listening_port=free_port(),
            listening_ip="127.0.0.1",
            relay_ip="127.0.0.1",
            min_port=low,
            max_port=low + ports - 1,
            max_allocate_lifetime=max_allocate_lifetime,
            max_allocate_timeout=3,  # calls follow each other fast: reused ports must not meet stale sessions
            loopback_for_tests=True,
        )
    )


def microphone_track(call: Call) -> Any:
    from aiortc import MediaStreamTrack

    class Microphone(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.clock = Paced(PTIME)

        async def recv(self) -> object:
            n = await self.clock.tick()
            return audio_frame(PCM(call.next_spoken(), RATE).to_int16(), n)

    return Microphone()


@dataclass
class Call:
    """One relay-only call. `say()` queues speech; `loud_after(t)` is when the tutor's voice
    was next heard after t; `frames` counts the video frames received."""

    config: dict[str, Any]
    pc: Any = None
    _speech: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    speech_ended: float = 0.0  # monotonic time the last queued speech finished playing
    loud: list[float] = field(default_factory=list)  # arrival times of loud 20 ms frames
    video: list[float] = field(default_factory=list)  # arrival times of video frames
    last_image: np.ndarray | None = None
    images: list[tuple[float, np.ndarray]] = field(default_factory=list)  # sampled, to see lips move
    keep_images: bool = False
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def say(self, pcm: PCM) -> float:
        """Queue speech; returns the seconds it lasts."""
        samples = resample(pcm, RATE).samples
        self._speech = np.concatenate([self._speech, samples])
        return len(samples) / RATE

    def next_spoken(self) -> np.ndarray:
        piece, self._speech = self._speech[:SAMPLES], self._speech[SAMPLES:]
        if len(piece) and not len(self._speech):
            self.speech_ended = time.monotonic() + len(piece) / RATE
        return np.pad(piece, (0, SAMPLES - len(piece)))

    def loud_after(self, t: float) -> float | None:
        return next((x for x in self.loud if x > t), None)

    def video_after(self, t: float) -> float | None:
        return next((x for x in self.video if x > t), None)

    async def open(self, send_offer: Callable[[dict[str, str]], Awaitable[dict[str, str]]]) -> float:
        """Offer, answer, and wait for media: returns the seconds from offer to first frames."""
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
        from aiortc.rtcconfiguration import RTCBundlePolicy, RTCIceTransportPolicy

        servers = [RTCIceServer(**s) for s in self.config["iceServers"]]
        policy = RTCIceTransportPolicy.RELAY if self.config.get("iceTransportPolicy") == "relay" else None
        # One transport for audio and video, as browsers do: one relay allocation, not two.
        config = RTCConfiguration(
            iceServers=servers, iceTransportPolicy=policy, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
        )
        self.pc = RTCPeerConnection(config)
        self.pc.addTrack(microphone_track(self))
        self.pc.addTransceiver("video", direction="recvonly")
        media = asyncio.get_running_loop().create_future()

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self.tasks.append(asyncio.create_task(self._receive(track, media)))

        started = time.monotonic()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await send_offer({"sdp": self.pc.localDescription.sdp, "type": "offer"})
        await self.pc.setRemoteDescription(RTCSessionDescription(**answer))
        await asyncio.wait_for(media, 20)
        return time.monotonic() - started

    async def _receive(self, track: Any, media: asyncio.Future[None]) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if not media.done():
                    media.set_result(None)
                if track.kind == "audio":
                    data = frame.to_ndarray().astype(np.float32) / 32768
                    if np.sqrt(np.mean(data**2)) > LOUD:
                        self.loud.append(now)
                else:
                    self.video.append(now)
                    if self.keep_images and len(self.video) % 5 == 0:
                        self.images.append((now, frame.to_ndarray(format="rgb24")))
        except MediaStreamError:
            return

    def pairs(self) -> list[tuple[str, str]]:
        ice = self.pc.getTransceivers()[0].receiver.transport.transport
        return [(p.local_candidate.type, p.remote_candidate.type) for p in ice._connection._nominated.values()]

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def piper_question(text: str) -> PCM:
    from tests.kit.speech import say

    return say(text, RATE)
