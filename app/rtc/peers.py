"""Live calls: one WebRTC peer per session, relay-only through TURN.

The server's own peer gathers only a TURN relay candidate (`WEBRTC_TURN_SERVER_LOCAL`, with
credentials of its own), and browsers are told the same policy, so every packet goes through
the relay's few UDP ports. A peer hears the student's microphone (VAD turn-taking, barge-in),
runs each turn through the conversation pipeline, and plays the answer on its tracks; the
text of each turn goes to whoever opened the call (the WebSocket, or the Student tab).

A call ends when its session ends, when the student hangs up, when it never connects within
`WEBRTC_CONNECT_TIMEOUT_SECONDS`, or when its connection stays lost for
`WEBRTC_DISCONNECT_GRACE_SECONDS`. Closing it releases its TURN allocation at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from app.conversation.frames import AudioOut, Failure, Frame, Interrupted, SpeechIn, TurnStarted
from app.conversation.listening import LiveMicrophone
from app.conversation.runner import TurnRunner
from app.conversation.service import Answer, ConversationService
from app.conversation.sessions import SessionInfo
from app.core.errors import EngineUnavailable, InvalidInput, RelayUnavailable, TooBusy, TutorError
from app.core.metrics import Metrics
from app.core.settings import Settings
from app.rtc import encoding
from app.rtc.media import MicrophoneIn, Playout, listen_promptly, tutor_tracks
from app.speech.vad import SpeechStarted
from avatars.animation import Animator
from avatars.service import Avatars
from turn import credentials
from tutors.store import TutorStore

log = logging.getLogger(__name__)

Sink = Callable[[Frame], Awaitable[None]]
SERVER_CREDENTIAL_TTL = 86_400  # the server's own never leave it; a call outlives a browser's
# A relay refused because a small range is short of ports is asked again for this long: coturn
# frees a released port about a second later, later still on a loaded box. A TURN server that
# does not answer costs aioice's 5 s gathering timeout, past the window, so it is not retried.
RELAY_RETRY_WINDOW_SECONDS = 4.0
RELAY_RETRY_SECONDS = 0.5


def turn_address(url: str) -> tuple[str, int]:
    """`turn:host:port?transport=udp` → (host, port)."""
    rest = url.split(":", 1)[1] if ":" in url else url
    parsed = urlparse("//" + rest.split("?", 1)[0])
    if not parsed.hostname:
        raise EngineUnavailable(f"TURN server URL {url!r} names no host")
    return parsed.hostname, parsed.port or 3478


def browser_configuration(settings: Settings, who: str) -> dict[str, Any]:
    """What a browser passes to `new RTCPeerConnection`: relay-only, short-lived credentials."""
    if settings.turn_secret is None or not settings.webrtc_turn_server:
        raise EngineUnavailable("WebRTC is not configured on this server (TURN_SECRET and WEBRTC_TURN_SERVER)")
    issued = credentials.issue(settings.turn_secret.get_secret_value(), settings.turn_ttl_seconds, who[:64])
    servers: list[dict[str, Any]] = [
        {"urls": [settings.webrtc_turn_server], "username": issued.username, "credential": issued.credential}
    ]
    return {"iceServers": servers, "iceTransportPolicy": "relay", "expires_at": issued.expires_at}


@dataclass(eq=False)
class Peer:
    id: str
    session: SessionInfo
    chat_id: str
    pc: Any  # aiortc RTCPeerConnection
    playout: Playout
    sink: Sink  # whoever opened the call: it shows the words
    answer: Callable[[str | SpeechIn], Answer]
    max_pending: int
    runner: TurnRunner[str | SpeechIn] = field(init=False)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    end_reason: str = ""
    candidates: list[Any] = field(default_factory=list)  # the browser's, as trickled
    offer_applied: bool = False
    on_close: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.runner = TurnRunner(
            self.answer,
            self.deliver,
            max_pending=self.max_pending,
            speaking=lambda: self.playout.speaking,
            name=f"rtc-{self.id}",
        )

    def selected_pairs(self) -> list[tuple[str, str]]:
        """(local, remote) candidate types of each nominated ICE pair: relay-only means
        ("relay", "relay") and nothing else."""
        pairs = []
        seen = set()
        for transceiver in self.pc.getTransceivers():
            ice = transceiver.receiver.transport.transport
            if id(ice) in seen:
                continue
            seen.add(id(ice))
            for pair in ice._connection._nominated.values():
                pairs.append((pair.local_candidate.type, pair.remote_candidate.type))
        return pairs

    async def deliver(self, frame: Frame, _question: object) -> None:
        """The final sink of the call's turns: the call plays the voice and the face, and
        whoever opened it shows the words."""
        if isinstance(frame, TurnStarted):
            self.playout.use_avatar(frame.avatar)
        elif isinstance(frame, AudioOut):
            self.playout.say(frame.speech)
        elif isinstance(frame, Interrupted):
            self.playout.flush()
        await self.sink(frame)


class Peers:
    def __init__(
        self,
        settings: Settings,
        conversation: ConversationService,
        tutors: TutorStore,
        avatars: Avatars,
        metrics: Metrics,
    ) -> None:
        self._metrics = metrics
        self._settings = settings
        self._conversation = conversation
        self._tutors = tutors
        self._avatars = avatars
        self._peers: dict[str, Peer] = {}
        # Browsers trickle candidates while their offer is still on its way or being answered.
        self._orphans: dict[str, list[Any]] = {}

    @property
    def configured(self) -> bool:
        s = self._settings
        return s.turn_secret is not None and bool(s.webrtc_turn_server_local or s.webrtc_turn_server)

    def summary(self) -> dict[str, Any]:
        return {
            "configured": self.configured,
            "ice_transport_policy": "relay",
            "peers": len(self._peers),
            "connected": sum(p.connected.is_set() for p in self._peers.values()),
            # Speech frames the renderer drew too late, over the open calls: the CPU is short.
            "underruns": sum(p.playout.underruns for p in self._peers.values()),
            "frames": sum(p.playout.frames_shown for p in self._peers.values()),
        }

    def get(self, peer_id: str) -> Peer | None:
        return self._peers.get(peer_id)

    def of_session(self, session_id: str) -> list[Peer]:
        return [p for p in self._peers.values() if p.session.id == session_id and not p.closed.is_set()]

    def _local_turn(self) -> tuple[str, str, str]:
        s = self._settings
        if not self.configured:
            raise EngineUnavailable(
                "live calls need TURN: set TURN_SECRET and WEBRTC_TURN_SERVER (and WEBRTC_TURN_SERVER_LOCAL "
                "if this server reaches it at another address)"
            )
        url = s.webrtc_turn_server_local or s.webrtc_turn_server
        assert url is not None and s.turn_secret is not None
        issued = credentials.issue(s.turn_secret.get_secret_value(), SERVER_CREDENTIAL_TTL, "server")
        return url, issued.username, issued.credential

    def _relay_problem(self, url: str) -> RelayUnavailable:
        return RelayUnavailable(
            f"the media relay (TURN server {url}) cannot be reached or refused this server's credentials; "
            "live voice and video are unavailable, text and recorded questions still work"
        )

    async def probe_turn(self, timeout: float = 3.0) -> None:
        """Allocate and release one relay: raises `RelayUnavailable` with the reason if the
        TURN server is down or refuses TURN_SECRET's credentials."""
        from aioice.turn import create_turn_endpoint

        url, username, password = self._local_turn()
        host, port = turn_address(url)
        try:
            transport, _ = await asyncio.wait_for(
                create_turn_endpoint(asyncio.DatagramProtocol, (host, port), username, password, lifetime=60),
                timeout,
            )
        except Exception as exc:
            log.warning("TURN probe of %s failed: %s", url, type(exc).__name__)
            raise self._relay_problem(url) from None
        transport.close()

    # -- opening a call ------------------------------------------------------------------
    async def open(
        self,
        session: SessionInfo,
        offer: object,
        sink: Sink,
        *,
        chat_id: str = "",
        peer_id: str | None = None,
    ) -> tuple[Peer, dict[str, str]]:
        """Answer a browser's offer; the answer's SDP carries the server's relay candidate."""
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
        from aiortc.rtcconfiguration import RTCIceTransportPolicy

        encoding.install()
        if not isinstance(offer, dict) or not isinstance(offer.get("sdp"), str) or offer.get("type") != "offer":
            raise InvalidInput('an offer is {"sdp": "<session description>", "type": "offer"}')
        engines = self._conversation.engines
        if engines.asr is None or engines.tts is None:
            raise EngineUnavailable("live calls need speech in and out (ENABLE_ASR and ENABLE_TTS)")
        url, username, password = self._local_turn()
        for old in self.of_session(session.id):
            await self.close(old, "replaced by a new call")
        if len(self._peers) >= self._settings.max_sessions:
            raise TooBusy(f"{self._settings.max_sessions} live calls are already open; try again later")

        configuration = RTCConfiguration(
            iceServers=[RTCIceServer(urls=[url], username=username, credential=password)],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        )
        tutor = await asyncio.to_thread(self._tutors.get, session.tutor_id)
        lipsync = engines.lipsync
        avatar = await asyncio.to_thread(self._avatars.frames, tutor.avatar_id) if lipsync is not None else None

        def answer(question: str | SpeechIn) -> Answer:
            return self._conversation.answer(session, chat_id, question, speak=True, animate=False)

        peer_id = peer_id or uuid.uuid4().hex
        if peer_id in self._peers:
            raise InvalidInput(f"a call with id {peer_id!r} already exists")
        early = self._orphans.pop(peer_id, [])
        deadline = time.monotonic() + RELAY_RETRY_WINDOW_SECONDS
        while True:
            pc = RTCPeerConnection(configuration=configuration)
            playout = Playout(Animator(lipsync, avatar))
            peer = Peer(peer_id, session, chat_id, pc, playout, sink, answer, self._settings.ws_max_pending_turns)
            peer.candidates = early + self._orphans.pop(peer_id, [])
            self._peers[peer.id] = peer
            try:
                answer = await self._negotiate(peer, RTCSessionDescription(sdp=offer["sdp"], type="offer"), url)
                self._metrics.relays.labels("allocated").inc()
                break
            except RelayUnavailable:
                await self.close(peer, "no relay")
                early = peer.candidates
                if time.monotonic() + RELAY_RETRY_SECONDS > deadline:
                    self._metrics.relays.labels("unavailable").inc()
                    raise
                self._metrics.relays.labels("refused_retried").inc()
                log.info("relay refused for call %s; asking again", peer_id)
                await asyncio.sleep(RELAY_RETRY_SECONDS)
            except BaseException:
                await self.close(peer, "negotiation failed")
                raise
        peer.tasks.append(asyncio.create_task(self._watch(peer), name=f"rtc-watch-{peer.id}"))
        peer.playout.start()
        log.info("call %s opened for session %s", peer.id, session.id)
        return peer, answer

    async def _negotiate(self, peer: Peer, offer: Any, url: str) -> dict[str, str]:
        pc = peer.pc
        voice, face = tutor_tracks(peer.playout)

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio":
                peer.tasks.append(asyncio.create_task(self._listen(peer, track), name=f"rtc-mic-{peer.id}"))
            else:  # a camera we did not ask for: read and drop, or aiortc queues it forever
                peer.tasks.append(asyncio.create_task(_drain(track)))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "connected":
                peer.connected.set()
            elif pc.connectionState in ("failed", "closed"):
                await self.close(peer, f"connection {pc.connectionState}")

        @pc.on("datachannel")
        def on_channel(channel: Any) -> None:
            pass  # the Student tab's component opens one; nothing travels on it

        try:
            await pc.setRemoteDescription(offer)
        except Exception as exc:
            raise InvalidInput(f"the offer is not a usable session description: {exc}") from None
        peer.offer_applied = True
        for candidate in peer.candidates:
            await pc.addIceCandidate(candidate)
        kinds = {t.kind: t for t in pc.getTransceivers()}
        if "audio" not in kinds:
            raise InvalidInput("the offer has no audio: a call needs the microphone")
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                listen_promptly(transceiver.receiver)
        pc.addTrack(voice)
        if "video" in kinds:
            pc.addTrack(face)
            # The student's camera is not needed: the answer asks the browser not to send it.
            kinds["video"].direction = "sendonly"
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)  # gathers the relay candidate (≤ 5 s)
        if " typ relay" not in pc.localDescription.sdp:
            raise self._relay_problem(url)
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}

    async def add_candidate(self, peer: Peer | str, candidate: object) -> None:
        """A trickled ICE candidate from the browser (`RTCIceCandidate.toJSON()`), for a call
        or for the id of a call whose offer has not been answered yet."""
        from aiortc.sdp import candidate_from_sdp

        if not isinstance(candidate, dict) or not isinstance(candidate.get("candidate", ""), str):
            raise InvalidInput('a candidate is {"candidate": "candidate:…", "sdpMid": …, "sdpMLineIndex": …}')
        line = candidate.get("candidate", "")
        if not line:
            return  # end of candidates
        try:
            parsed = candidate_from_sdp(line.removeprefix("candidate:"))
        except (ValueError, IndexError) as exc:
            raise InvalidInput(f"not an ICE candidate: {exc}") from None
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        if isinstance(peer, str):
            if (known := self._peers.get(peer)) is None:
                waiting = self._orphans.setdefault(peer, [])
                if len(self._orphans) > self._settings.max_sessions * 4 or len(waiting) >= 16:
                    self._orphans.pop(peer, None)
                    raise InvalidInput("too many candidates for a call that was never offered")
                waiting.append(parsed)
                return
            peer = known
        peer.candidates.append(parsed)
        if peer.offer_applied:
            await peer.pc.addIceCandidate(parsed)

    # -- a live call ---------------------------------------------------------------------
    async def _listen(self, peer: Peer, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        convert = MicrophoneIn()
        microphone = LiveMicrophone(self._conversation, peer.session, self._settings, peer.chat_id)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            try:
                heard = await microphone.hear(convert(frame))
                for item in heard:
                    if isinstance(item, SpeechStarted):
                        await peer.runner.interrupt()
                    else:
                        peer.runner.ask(item)
            except TutorError as exc:
                await peer.sink(Failure(exc.code, exc.message))

    async def _watch(self, peer: Peer) -> None:
        """Stale calls end: one that never connects, or stays disconnected."""
        s = self._settings
        try:
            await asyncio.wait_for(peer.connected.wait(), s.webrtc_connect_timeout_seconds)
        except TimeoutError:
            await self.close(peer, f"never connected within {s.webrtc_connect_timeout_seconds} s")
            return
        lost_since: float | None = None
        while not peer.closed.is_set():
            await asyncio.sleep(1)
            if peer.pc.connectionState == "connected":
                lost_since = None
            elif lost_since is None:
                lost_since = time.monotonic()
            elif time.monotonic() - lost_since > s.webrtc_disconnect_grace_seconds:
                await self.close(peer, "connection lost")
                return

    # -- ending --------------------------------------------------------------------------
    async def close(self, peer: Peer, reason: str) -> None:
        if peer.closed.is_set():
            return
        peer.closed.set()
        peer.end_reason = reason
        self._peers.pop(peer.id, None)
        for callback in peer.on_close:
            callback()
        current = asyncio.current_task()
        tasks = [t for t in peer.tasks if t is not current]
        for task in tasks:
            task.cancel()
        await peer.runner.close()
        await peer.playout.stop()
        with contextlib.suppress(Exception):
            await peer.pc.close()  # also releases its TURN allocation (a zero-lifetime refresh)
        await asyncio.gather(*tasks, return_exceptions=True)
        log.info("call %s closed: %s", peer.id, reason)

    async def session_ended(self, info: SessionInfo) -> None:
        """SessionManager listener: the session's call ends with it."""
        for peer in self.of_session(info.id):
            await self.close(peer, f"session ended ({info.end_reason})")

    async def close_all(self) -> None:
        for peer in list(self._peers.values()):
            await self.close(peer, "server stopping")


async def _drain(track: Any) -> None:
    from aiortc.mediastreams import MediaStreamError

    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()
