"""The Student tab's live call: FastRTC's WebRTC component (start/stop button, microphone,
the tutor's video and voice) wired to this server's own relay-only peers.

FastRTC's pitfalls are avoided, not patched:
- the component carries no `rtc_configuration` or `server_rtc_configuration`, so nothing with
  TURN credentials lands in Gradio's public `/config`; the browser asks `turn()` for fresh,
  short-lived ones at each start;
- the server's peer is ours (`app.rtc.peers`), built with an aiortc `RTCConfiguration` whose
  policy is relay, instead of FastRTC's, which drops a dict's policy;
- `turn()` and `offer()` arrive through Gradio's unauthenticated `component_server` route, so
  both answer only a page whose Gradio session was granted a tutor by this app's own events
  (page load, tutor pick), and every call counts against MAX_SESSIONS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
from fastrtc import WebRTC
from gradio.components.base import server

from app.conversation.frames import Frame, UserText
from app.conversation.sessions import SessionInfo
from app.core.errors import TooBusy, TutorError
from app.core.settings import Settings
from app.rtc.peers import Peers, browser_configuration

PROBE_CACHE_SECONDS = 10.0
MAX_GRANTS = 10_000


@dataclass
class Grant:
    """What a page may call: its tutor, and its session once it has one."""

    tutor_id: int
    session: dict[str, Any] = field(default_factory=dict)


@dataclass
class Feed:
    """A call's text, for the Student tab's chat."""

    state: dict[str, Any]
    frames: asyncio.Queue[Frame | None] = field(default_factory=asyncio.Queue)


class CallDesk:
    """Grants by Gradio session, and the calls the Student tab opened."""

    def __init__(
        self,
        peers: Peers,
        settings: Settings,
        open_session: Callable[[int, dict[str, Any]], Awaitable[tuple[dict[str, Any], SessionInfo]]],
    ) -> None:
        self.peers = peers
        self.settings = settings
        self._open_session = open_session  # (tutor, the page's saved state) → its live session
        self.grants: dict[str, Grant] = {}
        self.feeds: dict[str, Feed] = {}
        self.calls: dict[str, str] = {}  # Gradio session → its call's id
        self._probed: tuple[float, TutorError | None] = (0.0, None)

    def grant(self, session_hash: str | None, tutor_id: int | None, state: dict[str, Any] | None) -> None:
        if not session_hash:
            return
        self.grants.pop(session_hash, None)
        if tutor_id is None:
            return
        if len(self.grants) >= MAX_GRANTS:  # pages that closed without a word: oldest first
            del self.grants[next(iter(self.grants))]
        self.grants[session_hash] = Grant(int(tutor_id), dict(state or {}))

    async def forget(self, session_hash: str | None) -> None:
        """The page closed: its grant goes, and so does its call."""
        self.grants.pop(session_hash or "", None)
        peer = self.peers.get(self.calls.pop(session_hash or "", ""))
        if peer is not None:
            await self.peers.close(peer, "the page was closed")

    async def relay_problem(self) -> TutorError | None:
        checked, problem = self._probed
        if time.monotonic() - checked > PROBE_CACHE_SECONDS:
            try:
                await self.peers.probe_turn()
                problem = None
            except TutorError as exc:
                problem = exc
            self._probed = (time.monotonic(), problem)
        return problem

    async def ice_servers(self, session_hash: str) -> dict[str, Any]:
        if session_hash not in self.grants:
            return {"error": "Pick a tutor first, then start the call."}
        try:
            if (problem := await self.relay_problem()) is not None:
                return {"error": problem.message}
            config = browser_configuration(self.settings, f"ui-{session_hash[:12]}")
        except TutorError as exc:
            return {"error": exc.message}
        config.pop("expires_at")
        return config

    async def offer(self, session_hash: str, body: dict[str, Any]) -> dict[str, Any]:
        webrtc_id = str(body.get("webrtc_id") or "")
        grant = self.grants.get(session_hash)
        if grant is None or not webrtc_id:
            return _failed("not_allowed", "Pick a tutor first, then start the call.")
        try:
            if body.get("type") == "ice-candidate":
                if self.calls.get(session_hash) != webrtc_id and self.peers.get(webrtc_id) is not None:
                    return _failed("not_allowed", "that call belongs to another page")
                await self.peers.add_candidate(webrtc_id, body.get("candidate"))
                return {"status": "success"}
            state, session = await self._open_session(grant.tutor_id, grant.session)
            grant.session = state
            feed = Feed(state)

            async def sink(frame: Frame) -> None:
                feed.frames.put_nowait(frame)

            self.calls[session_hash] = webrtc_id  # its candidates may come while it is answered
            peer, answer = await self.peers.open(
                session, {"sdp": body.get("sdp"), "type": body.get("type")}, sink, chat_id="ui", peer_id=webrtc_id
            )
            self.feeds[webrtc_id] = feed
            peer.on_close.append(lambda: self._ended(session_hash, webrtc_id))
            return answer
        except TooBusy as exc:
            return _failed("concurrency_limit_reached", exc.message)
        except TutorError as exc:
            return _failed(exc.code, exc.message)

    def ask(self, session_hash: str | None, text: str) -> bool:
        """A question typed on a page with a live call is answered on the call, aloud and lip-
        synced, its words in the call's feed like a spoken one's. False: the page has no call."""
        webrtc_id = self.calls.get(session_hash or "", "")
        peer, feed = self.peers.get(webrtc_id), self.feeds.get(webrtc_id)
        if peer is None or feed is None or not peer.connected.is_set():
            return False
        feed.frames.put_nowait(UserText(text))
        peer.runner.ask(text)
        return True

    def _ended(self, session_hash: str, webrtc_id: str) -> None:
        feed = self.feeds.pop(webrtc_id, None)  # its reader, if any, holds it and drains it
        if feed is not None:
            feed.frames.put_nowait(None)
        if self.calls.get(session_hash) == webrtc_id:
            del self.calls[session_hash]


# FastRTC's video call asks the browser for camera and microphone together, so a student with
# no camera (or one another program holds) could not call at all. This goes into the page's
# head: when the camera is what fails, the call asks for the microphone alone, and its offer
# still asks to receive video, so the student hears and sees the tutor (the server's answer
# only ever sends video: `Peers._negotiate`).
CAMERA_OPTIONAL = """<script>
(() => {
  const media = navigator.mediaDevices;
  if (!media || !window.RTCPeerConnection || media.tutorCameraOptional) return;
  media.tutorCameraOptional = true;
  const ask = media.getUserMedia.bind(media);
  const noCamera = ["NotFoundError", "OverconstrainedError", "NotReadableError", "AbortError"];
  let withoutCamera = false;
  media.getUserMedia = async (wanted) => {
    if (!wanted || !wanted.video || !wanted.audio) return ask(wanted);
    if (!withoutCamera) {
      try { return await ask(wanted); } catch (error) { if (!noCamera.includes(error.name)) throw error; }
      withoutCamera = true;
      console.info("no usable camera: the call goes on with the microphone alone");
    }
    return ask({ audio: wanted.audio });
  };
  const offer = RTCPeerConnection.prototype.createOffer;
  RTCPeerConnection.prototype.createOffer = function (...args) {
    const sending = this.getSenders().some((s) => s.track && s.track.kind === "audio");
    const video = this.getTransceivers().some((t) => t.receiver.track.kind === "video");
    if (withoutCamera && sending && !video) this.addTransceiver("video", { direction: "recvonly" });
    return offer.apply(this, args);
  };
})();
</script>"""


def _failed(code: str, message: str) -> dict[str, Any]:
    return {"status": "failed", "meta": {"error": code, "message": message}}


async def _session_hash(request: Any) -> str:
    """`component_server` hands server functions the raw request; its JSON body (already read
    and cached by Starlette) names the Gradio session."""
    try:
        body = await request.json()
    except Exception:
        return ""
    return str(body.get("session_hash") or "") if isinstance(body, dict) else ""


def live_call(desk: CallDesk, **kwargs: Any) -> WebRTC:
    """FastRTC's component, audio and video both ways, its two server functions answered by
    `desk`. They are set on the instance: a subclass would make Gradio write a `.pyi` stub next
    to this module at import, and serve the browser code from here instead of from FastRTC."""
    component = WebRTC(
        modality="audio-video",
        mode="send-receive",
        rtc_configuration=None,
        server_rtc_configuration=None,
        # FastRTC's frontend asks for a camera in this mode; the answer is sendonly, so the
        # browser never sends it: ask for the least of it.
        track_constraints={
            "video": {"width": {"ideal": 160}, "height": {"ideal": 120}, "frameRate": {"ideal": 5}},
            "audio": {"echoCancellation": True, "noiseSuppression": True, "autoGainControl": True},
        },
        **kwargs,
    )

    @server
    async def turn(_: Any, request: gr.Request) -> dict[str, Any]:
        return await desk.ice_servers(await _session_hash(request))

    @server
    async def offer(body: Any, request: gr.Request) -> dict[str, Any]:
        if not isinstance(body, dict):
            return _failed("invalid_input", "an offer is a JSON object")
        return await desk.offer(await _session_hash(request), body)

    component.turn = turn  # type: ignore[method-assign]
    component.offer = offer  # type: ignore[method-assign]
    return component
