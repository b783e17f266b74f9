"""The contract WebSocket: `/ws/{connection_id}?token=` and its alias `/ws/ws/{connection_id}`.

A connection is either one session's (`<session_id>`) or one student's (`user_<id>`), carrying
any of that student's live sessions, each message naming its `engine_session_id`. Every
engine session on a socket has its own turn runner, so turns of one chat stay in order and a
flood is refused with an error instead of piling up. The socket is the runner's final sink:
`WIRE` turns each frame into the contract's message. Bad input gets an `error` message; the
socket and the session stay usable.

Spoken questions arrive as `audio`: a whole recording, or (**new**, `"stream": true`) a live
microphone stream cut into turns by the VAD. A session can also open a live call
(`webrtc_offer`, `webrtc_ice_candidate`, see `app.rtc.peers`): its microphone is heard on the
call, and while the call lasts the session's answers are spoken on it, their text coming here.

Speech from the student while the tutor is still answering or talking is a barge-in: the
answer is cancelled (model, queued sentences, audio), waiting questions are dropped, and the
client gets `{"type": "interrupted"}` so it can stop playing what it has buffered.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, ValidationError

from app.conversation.frames import (
    AnswerText,
    AudioOut,
    Failure,
    Frame,
    Interrupted,
    NoticeFrame,
    SpeechIn,
    TextDelta,
    Transcription,
    VideoOut,
)
from app.conversation.listening import LiveMicrophone
from app.conversation.runner import TurnRunner
from app.conversation.service import Answer, ConversationService
from app.conversation.sessions import SessionInfo, SessionManager
from app.core.errors import InvalidInput, NotFound, SessionEnded, TutorError, Unauthorized
from app.core.settings import Settings
from app.rtc.peers import Peer, Peers
from app.speech import audio
from app.speech.vad import SpeechStarted, speech_seconds

log = logging.getLogger(__name__)
router = APIRouter()

POLICY_VIOLATION = 1008
INPUT_TYPES = ("text", "text_webrtc", "audio", "webrtc_offer", "webrtc_ice_candidate")


class ClientMessage(BaseModel):
    """What a client may send; unknown extra fields are ignored, as the old server did."""

    model_config = ConfigDict(extra="ignore")

    type: str
    content: Any = None
    tutor_id: int | None = None
    session_id: int | str | None = None
    engine_session_id: str | None = None
    user_id: int | str | None = None
    avatar_id: str | None = None
    kb_id: str | None = None
    sample_rate: int | None = None
    peer_id: str | None = None  # webrtc_ice_candidate: which call (default: the session's latest)
    stream: bool = False  # audio: a chunk of a live microphone stream, not a whole recording
    end: bool = False  # stream: the microphone was closed; end the turn in progress


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@dataclass
class Turn:
    chat_id: str
    question: str | SpeechIn


def _audio(frame: AudioOut) -> dict[str, Any]:
    speech = frame.speech
    return {
        "type": "audio",
        "content": base64.b64encode(audio.wav_bytes(speech.pcm)).decode(),
        "format": "wav",
        "sample_rate": speech.pcm.sample_rate,
        "seq": frame.seq,
        "final": frame.final,
        "text": speech.text,
        "engine": speech.engine,
        "role": "assistant",
    }


def _video(frame: VideoOut) -> dict[str, Any]:
    return {
        "type": "video",
        "content": base64.b64encode(frame.mp4).decode(),
        "format": "mp4",
        "seq": frame.seq,
        "final": frame.final,
        "frames": frame.frames,
        "fps": frame.fps,
        "role": "assistant",
    }


# Each frame as the contract's message; the frames a client never sees are not here.
WIRE: dict[type[Frame], Callable[[Any], dict[str, Any]]] = {
    Transcription: lambda f: {"type": "transcription", "content": f.text, "role": "user"},
    TextDelta: lambda f: {"type": "text_delta", "content": f.text, "role": "assistant"},
    AnswerText: lambda f: {"type": "text", "content": f.text, "role": "assistant", "final": True, "sources": f.sources},
    AudioOut: _audio,
    VideoOut: _video,
    NoticeFrame: lambda f: {"type": "notice", "code": f.code, "content": f.text},
    Interrupted: lambda f: {"type": "interrupted"},
    Failure: lambda f: {"type": "error", "code": f.code, "content": f.text},
}


@dataclass(eq=False)
class Line:
    """One engine session on a socket: its turns, and its live microphone when it streams one."""

    session: SessionInfo
    runner: TurnRunner[Turn] = field(init=False)
    microphone: LiveMicrophone | None = None
    speaking_until: float = 0.0  # monotonic time when the client finishes playing our audio

    def still_playing(self) -> bool:
        return time.monotonic() < self.speaking_until


@dataclass(eq=False)  # identity, not value: connections live in sets
class Connection:
    ws: WebSocket
    user_id: int | None  # set for `user_<id>` sockets
    own_session: SessionInfo | None  # set for `<session_id>` sockets
    sessions: SessionManager
    conversation: ConversationService
    settings: Settings
    calls: Peers
    lines: dict[str, Line] = field(default_factory=dict)
    opened_calls: list[str] = field(default_factory=list)  # closed with the socket
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False

    async def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        message.setdefault("timestamp", _now())
        async with self.send_lock:
            try:
                await self.ws.send_text(json.dumps(message, ensure_ascii=False))
            except (WebSocketDisconnect, RuntimeError):
                self.closed = True

    async def send_error(self, error: TutorError, **extra: Any) -> None:
        await self.send({"type": "error", "content": error.message, "code": error.code, **extra})

    async def send_frame(self, frame: Frame, tags: dict[str, Any]) -> None:
        if (translate := WIRE.get(type(frame))) is not None:
            await self.send({**translate(frame), **tags})

    # -- input ---------------------------------------------------------------------------
    async def handle_raw(self, raw: str) -> None:
        if len(raw.encode()) > self.settings.ws_max_message_bytes:
            raise InvalidInput(f"message larger than {self.settings.ws_max_message_bytes} bytes")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"message is not valid JSON ({exc.msg} at position {exc.pos})") from None
        if not isinstance(data, dict):
            raise InvalidInput("message must be a JSON object with a `type`")
        try:
            message = ClientMessage.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors())
            raise InvalidInput(f"malformed message: {problems}") from None
        await self.handle(message)

    async def handle(self, message: ClientMessage) -> None:
        if message.type not in INPUT_TYPES:
            raise InvalidInput(f"unknown message type {message.type!r}; expected one of {', '.join(INPUT_TYPES)}")
        session = await self.target_session(message)
        if message.tutor_id is not None and message.tutor_id != session.tutor_id:
            raise InvalidInput(f"tutor_id {message.tutor_id} does not match this session's tutor {session.tutor_id}")
        chat_id = "" if message.session_id is None else str(message.session_id)
        line = self.line(session)
        if message.type == "audio":
            await self.hear(line, chat_id, message)
        elif message.type == "webrtc_offer":
            await self.call(line, chat_id, message)
        elif message.type == "webrtc_ice_candidate":
            await self.calls.add_candidate(self.current_call(session, message), message.content)
        elif calls := self.calls.of_session(session.id):
            # A session on a call hears its answers there: the call carries voice and video.
            calls[-1].runner.ask(self.conversation.check_text(message.content))
        else:
            line.runner.ask(Turn(chat_id, self.conversation.check_text(message.content)))
        await self.touch(session.id)

    def line(self, session: SessionInfo) -> Line:
        line = self.lines.get(session.id)
        if line is None:
            line = Line(session)
            speak = self.conversation.engines.tts is not None

            def answer(turn: Turn) -> Answer:
                return self.conversation.answer(session, turn.chat_id, turn.question, speak=speak)

            async def sink(frame: Frame, turn: Turn | None) -> None:
                await self.deliver(line, frame, turn.chat_id if turn else "")

            line.runner = TurnRunner(
                answer,
                sink,
                max_pending=self.settings.ws_max_pending_turns,
                speaking=line.still_playing,
                name=f"ws-{session.id}",
            )
            self.lines[session.id] = line
        return line

    async def deliver(self, line: Line, frame: Frame, chat_id: str) -> None:
        """The final sink of a session's turns on this socket."""
        if isinstance(frame, AudioOut):
            # Playback runs behind what we send: until it ends, student speech is a barge-in.
            start = max(time.monotonic(), line.speaking_until)
            line.speaking_until = start + frame.speech.pcm.seconds
        elif isinstance(frame, Interrupted):
            line.speaking_until = 0.0
        await self.send_frame(frame, self.tags(line.session, chat_id))
        if isinstance(frame, AnswerText | Failure):
            await self.touch(line.session.id)

    # -- WebRTC --------------------------------------------------------------------------
    async def call(self, line: Line, chat_id: str, message: ClientMessage) -> None:
        """Open a live call for the session: the answer comes back as `webrtc_answer`; the
        call's transcripts and text come on this socket, its voice and video on the call."""
        offer = message.content
        if isinstance(offer, str):
            offer = {"sdp": offer, "type": "offer"}
        tags = self.tags(line.session, chat_id)

        async def sink(frame: Frame) -> None:
            if not isinstance(frame, AudioOut | VideoOut):
                await self.send_frame(frame, tags)

        peer, answer = await self.calls.open(line.session, offer, sink, chat_id=chat_id)
        self.opened_calls.append(peer.id)
        await self.send({"type": "webrtc_answer", "content": answer, "peer_id": peer.id, **tags})

    def current_call(self, session: SessionInfo, message: ClientMessage) -> Peer:
        wanted = message.peer_id
        for peer in reversed(self.calls.of_session(session.id)):
            if wanted is None or peer.id == wanted:
                return peer
        raise InvalidInput("no live call for this session: send `webrtc_offer` first")

    # -- speech in -----------------------------------------------------------------------
    async def hear(self, line: Line, chat_id: str, message: ClientMessage) -> None:
        vad, _ = self.conversation.listening()
        if message.stream:
            await self.hear_stream(line, chat_id, message)
            return
        pcm = await asyncio.to_thread(
            audio.decode,
            audio.b64decode(message.content),
            sample_rate=message.sample_rate,
            max_seconds=self.settings.asr_max_seconds,
        )
        # A new spoken question while the tutor talks is a barge-in, if it holds speech at all
        # (measured once: the recogniser's stage reuses the figure).
        heard = None
        if line.runner.busy:
            heard = await asyncio.to_thread(speech_seconds, vad, pcm, self.settings.vad_threshold)
            if heard * 1000 >= self.settings.vad_min_speech_ms:
                await line.runner.interrupt()
        line.runner.ask(Turn(chat_id, SpeechIn(pcm, heard=heard)))

    async def hear_stream(self, line: Line, chat_id: str, message: ClientMessage) -> None:
        if line.microphone is None:
            line.microphone = LiveMicrophone(self.conversation, line.session, self.settings, chat_id)
        samples = np.zeros(0, dtype=np.float32)
        if message.content:
            data = audio.b64decode(message.content)
            if message.sample_rate is None and data[:4] != b"RIFF":
                raise InvalidInput("a streamed audio chunk is raw 16-bit PCM: give its `sample_rate`")
            chunk = await asyncio.to_thread(
                audio.decode, data, sample_rate=message.sample_rate, max_seconds=self.settings.asr_max_seconds
            )
            samples = chunk.samples
        for heard in await line.microphone.hear(samples, end=message.end):
            if isinstance(heard, SpeechStarted):
                await line.runner.interrupt()
            else:
                line.runner.ask(Turn(chat_id, heard))

    async def target_session(self, message: ClientMessage) -> SessionInfo:
        if self.own_session is not None:
            if message.engine_session_id and message.engine_session_id != self.own_session.id:
                raise InvalidInput("engine_session_id does not match this socket's session")
            return self.own_session
        session_id = message.engine_session_id
        if not session_id:
            raise InvalidInput("`engine_session_id` is required on a user_<id> socket")
        try:
            session = await asyncio.to_thread(self.sessions.require_active, session_id)
        except NotFound:
            raise InvalidInput(f"unknown engine_session_id {session_id}") from None
        if session.student_id != self.user_id:
            raise InvalidInput("that engine session belongs to another user")
        return session

    async def touch(self, session_id: str) -> None:
        if self.sessions.touch_due(session_id):
            await asyncio.to_thread(self.sessions.touch, session_id)

    def tags(self, session: SessionInfo, chat_id: str) -> dict[str, Any]:
        tags: dict[str, Any] = {"engine_session_id": session.id}
        if chat_id:
            tags["session_id"] = chat_id
        return tags

    # -- lifecycle -----------------------------------------------------------------------
    async def session_ended(self, info: SessionInfo) -> None:
        line = self.lines.pop(info.id, None)
        if line:
            await line.runner.close()
        await self.send_error(
            SessionEnded(f"session {info.id} has ended ({info.end_reason})"), engine_session_id=info.id
        )
        if self.user_id is None:
            await self.close(1000, "session ended")

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            try:
                await self.ws.close(code=code, reason=reason)
            except RuntimeError:
                pass

    async def shutdown(self) -> None:
        await asyncio.gather(*(line.runner.close() for line in self.lines.values()), return_exceptions=True)
        self.lines.clear()
        for peer_id in self.opened_calls:
            if (peer := self.calls.get(peer_id)) is not None:
                await self.calls.close(peer, "its WebSocket closed")


class LiveConnections:
    """Open sockets by session, so ending a session reaches its sockets."""

    def __init__(self) -> None:
        self._by_session: dict[str, set[Connection]] = {}
        self._by_user: dict[int, set[Connection]] = {}

    def add(self, conn: Connection, session_id: str | None) -> None:
        if session_id:
            self._by_session.setdefault(session_id, set()).add(conn)
        if conn.user_id is not None:
            self._by_user.setdefault(conn.user_id, set()).add(conn)

    def remove(self, conn: Connection) -> None:
        for index in (self._by_session, self._by_user):
            for key in [k for k, conns in index.items() if conn in conns]:
                index[key].discard(conn)
                if not index[key]:
                    del index[key]

    def count(self) -> int:
        return len({c for conns in (*self._by_session.values(), *self._by_user.values()) for c in conns})

    async def session_ended(self, info: SessionInfo) -> None:
        """SessionManager listener: tells the session's sockets."""
        targets = set(self._by_session.get(info.id, ()))
        if info.student_id is not None:
            targets |= self._by_user.get(info.student_id, set())
        await asyncio.gather(*(c.session_ended(info) for c in targets), return_exceptions=True)


async def _authenticate(
    sessions: SessionManager, connection_id: str, token: str
) -> tuple[int | None, SessionInfo | None]:
    if connection_id.startswith("user_"):
        try:
            user_id = int(connection_id.removeprefix("user_"))
        except ValueError:
            raise Unauthorized("connection id must be <session_id> or user_<user_id>") from None
        await asyncio.to_thread(sessions.authenticate_user, user_id, token)
        return user_id, None
    return None, await asyncio.to_thread(sessions.authenticate, connection_id, token)


@router.websocket("/ws/{connection_id}")
@router.websocket("/ws/ws/{connection_id}")
async def conversation_socket(websocket: WebSocket, connection_id: str, token: str = "") -> None:
    services = websocket.app.state.services
    try:
        user_id, session = await _authenticate(services.sessions, connection_id, token)
    except TutorError:
        # Closing before accept answers the handshake with HTTP 403.
        await websocket.close(code=POLICY_VIOLATION)
        return
    await websocket.accept()
    if session is not None:
        services.conversation.prepare_tutor_soon(session.tutor_id)  # its prompt, while the student speaks
    conn = Connection(
        websocket, user_id, session, services.sessions, services.conversation, services.settings, services.calls
    )
    services.live.add(conn, session.id if session else None)
    try:
        while True:
            event = await websocket.receive()
            if event["type"] == "websocket.disconnect":
                break
            raw = event.get("text")
            if raw is None:
                await conn.send_error(InvalidInput("send JSON in text frames, not binary frames"))
                continue
            try:
                await conn.handle_raw(raw)
            except TutorError as exc:
                await conn.send_error(exc)
    except WebSocketDisconnect:
        pass
    finally:
        conn.closed = True
        services.live.remove(conn)
        await conn.shutdown()
