"""The Student tab: pick a tutor (or arrive with the web backend's session), then ask by
typing, by recording, or live on a call, and watch the answer stream in, spoken and, with an
avatar, lip-synced.

A student's session (id and token) is kept in the browser's local storage, so a reload
continues the same conversation; a student sent by the web backend arrives with
`?session=<id>&token=<engine_token>` and talks in that session.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from app.conversation.frames import AudioOut, SpeechIn, TurnStarted, VideoOut
from app.conversation.sessions import SessionInfo
from app.core.errors import TutorError
from app.core.media import PCM
from app.services import Services
from app.speech.audio import for_recognition, wav_bytes
from app.ui.call import CallPanel
from app.ui.chat import THINKING, Chat, show
from app.ui.common import engine_status, friendly, tutor_choices
from app.ui.words import relabel, words
from tutors.store import Tutor

UI_CHAT_ID = "ui"
# What a turn's handler yields to change none of its five outputs. The voice and the avatar's
# video are streams: a run must put something (nothing: None) into each before it ends, or
# Gradio fails the run as it closes a stream never opened.
UNCHANGED = (gr.skip(), gr.skip(), gr.skip(), None, None)
Recording = tuple[int, np.ndarray]  # what a microphone component gives: (rate, samples)
Saved = dict[str, Any]  # the session kept in the browser: id, token, tutor


def from_microphone(rate: int, samples: np.ndarray, max_seconds: float) -> PCM:
    """Gradio's (rate, int16 array, maybe stereo) → 16 kHz mono, checked like any audio."""
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    scale = 32768.0 if samples.dtype.kind == "i" else 1.0
    return for_recognition(PCM(samples.astype(np.float32) / scale, rate), max_seconds)


class MediaFiles:
    """Answer videos handed to Gradio by path (its streaming reads files); kept a few minutes."""

    def __init__(self, folder: Path, keep_seconds: float = 600) -> None:
        self.folder = folder
        self.keep_seconds = keep_seconds
        folder.mkdir(parents=True, exist_ok=True)

    def keep(self, mp4: bytes) -> str:
        cutoff = time.time() - self.keep_seconds
        for old in self.folder.glob("*.mp4"):
            if old.stat().st_mtime < cutoff:
                old.unlink(missing_ok=True)
        path = self.folder / f"{uuid.uuid4().hex}.mp4"
        path.write_bytes(mp4)
        return str(path)


class StudentTab:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.media = MediaFiles(services.settings.data_dir / "ui_media")
        self.call = CallPanel(services, self.call_session)

    # -- reads ----------------------------------------------------------------------------
    def greeting_of(self, tutor: Tutor) -> Chat:
        return [{"role": "assistant", "content": tutor.greeting}] if tutor.greeting else []

    def conversation_of(self, tutor: Tutor, session_id: str) -> Chat:
        said = [m for m in self.services.transcripts.messages(session_id) if m.chat_id == UI_CHAT_ID]
        return self.greeting_of(tutor) + [{"role": m.role, "content": m.content} for m in said]

    def idle_loop(self, tutor: Tutor | None) -> Any:
        """The tutor's avatar, silent, looping: shown while it listens."""
        services = self.services
        if tutor is None or services.engines.lipsync is None or services.avatars.frames(tutor.avatar_id) is None:
            return gr.update(value=None, visible=False)
        return gr.update(value=str(services.settings.avatar_folder / str(tutor.avatar_id) / "idle.mp4"), visible=True)

    def restore(self, saved: Saved, query: dict[str, str]) -> tuple[Any, Chat, Saved, str, Any, str]:
        """Tutor picker, chat, saved session, header, avatar and language for a page (re)load."""
        sessions, tutors = self.services.sessions, self.services.tutors
        arrived = {"session_id": query.get("session"), "token": query.get("token")}
        for candidate, locked in ((arrived, True), (saved or {}, False)):
            if not (candidate.get("session_id") and candidate.get("token")):
                continue
            try:
                info = sessions.authenticate(candidate["session_id"], candidate["token"])
            except TutorError:
                continue
            tutor = tutors.get(info.tutor_id)
            state = {"session_id": info.id, "token": candidate["token"], "tutor_id": tutor.id}
            picker = gr.update(choices=tutor_choices(tutors), value=tutor.id, interactive=not locked)
            header = f"### {tutor.name}\n{tutor.subject}"
            chat = self.conversation_of(tutor, info.id)
            return picker, chat, state, header, self.idle_loop(tutor), tutor.language
        choices = tutor_choices(tutors)
        if not choices:
            return gr.update(choices=[], value=None), [], {}, words(None)["nobody"], self.idle_loop(None), "en"
        tutor = tutors.get(choices[0][1])
        header = f"### {tutor.name}\n{tutor.subject}"
        picker = gr.update(choices=choices, value=tutor.id)
        return picker, self.greeting_of(tutor), {}, header, self.idle_loop(tutor), tutor.language

    # -- sessions -------------------------------------------------------------------------
    async def live_session(self, tutor_id: int, saved: Saved) -> Saved:
        sessions = self.services.sessions
        self.services.conversation.prepare_tutor_soon(tutor_id)  # while the student types
        if saved and saved.get("tutor_id") == tutor_id:
            try:
                await asyncio.to_thread(sessions.authenticate, saved["session_id"], saved["token"])
                return saved
            except TutorError:
                pass  # ended or expired: start a new one
        info, token = await asyncio.to_thread(sessions.create, tutor_id, None, None)
        return {"session_id": info.id, "token": token, "tutor_id": tutor_id}

    async def call_session(self, tutor_id: int, saved: Saved) -> tuple[Saved, SessionInfo]:
        state = await self.live_session(tutor_id, saved)
        return state, await asyncio.to_thread(self.services.sessions.require_active, state["session_id"])

    # -- events ---------------------------------------------------------------------------
    async def on_load(self, saved: Saved, request: gr.Request) -> tuple[Any, ...]:
        query = dict(request.query_params) if request else {}
        picker, chat, state, header, idle, language = await asyncio.to_thread(self.restore, saved, query)
        self.call.desk.grant(request.session_hash, picker.get("value"), state)
        picker["label"] = words(language)["tutor"]  # with its choices: one update for the picker
        _, chat_view, *labels = relabel(language, chat)
        return (picker, chat_view, state, header, idle, engine_status(self.services.warmup), *labels)

    async def pick_tutor(self, tutor_id: int | None, saved: Saved, request: gr.Request) -> tuple[Any, ...]:
        same = saved if saved and saved.get("tutor_id") == tutor_id else {}
        self.call.desk.grant(request.session_hash, tutor_id, same)
        if not tutor_id:
            picker, chat, *labels = relabel(None, [])
            return picker, chat, saved, "", self.idle_loop(None), *labels
        tutor = await asyncio.to_thread(self.services.tutors.get, int(tutor_id))
        header = f"### {tutor.name}\n{tutor.subject}"
        idle = await asyncio.to_thread(self.idle_loop, tutor)
        if same:  # back to the tutor of the saved session: its conversation goes on
            said = await asyncio.to_thread(self.conversation_of, tutor, saved["session_id"])
        else:
            said = self.greeting_of(tutor)
        picker, chat, *labels = relabel(tutor.language, said)
        return picker, chat, same, header, idle, *labels

    async def converse(
        self,
        question: str | SpeechIn,
        tutor_id: int | None,
        saved: Saved,
        history: Chat,
        speak: bool,
        page: str | None,
    ) -> AsyncIterator[tuple[Chat, Saved, bytes | None, str | None]]:
        """One turn, typed or spoken: (chat, session, the next sentence as WAV, or as a
        lip-synced MP4 file when the tutor has an avatar: its sound is in the video)."""
        if not tutor_id:
            raise gr.Error(words(None)["pick_first"])
        state, session = await self.call_session(int(tutor_id), saved)
        self.call.desk.grant(page, int(tutor_id), state)
        history = list(history)
        if isinstance(question, str):
            history.append({"role": "user", "content": question})
        history.append({"role": "assistant", "content": ""} if isinstance(question, str) else dict(THINKING))
        yield history, state, None, None
        animated = False
        async for frame in self.services.conversation.answer(session, UI_CHAT_ID, question, speak=speak):
            voice, video = None, None
            if isinstance(frame, TurnStarted):
                animated = frame.avatar is not None
                continue
            if isinstance(frame, AudioOut) and len(frame.speech.pcm.samples) and not animated:
                voice = wav_bytes(frame.speech.pcm)
            elif isinstance(frame, VideoOut):
                video = await asyncio.to_thread(self.media.keep, frame.mp4)
            elif not show(frame, history):
                continue
            yield history, state, voice, video
        if history and history[-1] == {"role": "assistant", "content": ""}:
            history.pop()  # nothing was heard: no empty bubble
            yield history, state, None, None
        await asyncio.to_thread(self.services.sessions.touch, session.id)

    @friendly
    async def ask(
        self, text: str, tutor_id: int | None, saved: Saved, history: Chat, speak: bool, request: gr.Request
    ) -> AsyncIterator[tuple[Any, ...]]:
        if not text or not text.strip():
            # A generator that yields nothing empties every output: the conversation included.
            yield UNCHANGED
            return
        page = request.session_hash
        if self.call.desk.ask(page, self.services.conversation.check_text(text)):
            # The call's feed shows the question and its answer; nothing else here changes.
            yield "", *UNCHANGED[1:]
            return
        # The box is emptied as the question is taken, then left alone: the student may be
        # typing the next question while this answer streams.
        box: Any = ""
        async for chat_now, state, voice, video in self.converse(text, tutor_id, saved, history, speak, page):
            yield box, chat_now, state, voice, video
            box = gr.skip()

    @friendly
    async def ask_aloud(
        self,
        recording: Recording | None,
        tutor_id: int | None,
        saved: Saved,
        history: Chat,
        speak: bool,
        request: gr.Request,
    ) -> AsyncIterator[tuple[Any, ...]]:
        if recording is None:
            yield UNCHANGED
            return
        rate, samples = recording
        pcm = await asyncio.to_thread(from_microphone, rate, samples, self.services.settings.asr_max_seconds)
        question, page = SpeechIn(pcm), request.session_hash
        recorder: Any = None
        async for chat_now, state, voice, video in self.converse(question, tutor_id, saved, history, speak, page):
            yield recorder, chat_now, state, voice, video
            recorder = gr.skip()

    # -- layout ---------------------------------------------------------------------------
    def build(self, blocks: gr.Blocks, saved: gr.BrowserState) -> None:
        engines, settings = self.services.engines, self.services.settings
        with gr.Row():
            tutor_pick = gr.Dropdown(label="Tutor", choices=[], elem_id="tutor-pick")
            status = gr.Markdown(elem_id="engine-status")
        header = gr.Markdown(elem_id="tutor-header")
        with gr.Row():
            with gr.Column(scale=2, min_width=240, visible=engines.lipsync is not None):
                # The avatar listening (its idle loop), and speaking (lip-synced, streamed).
                idle_view = gr.Video(
                    label="Tutor", autoplay=True, loop=True, interactive=False, visible=False, elem_id="avatar-idle"
                )
                talk_view = gr.Video(
                    label="Speaking", streaming=True, autoplay=True, interactive=False, elem_id="avatar-talk"
                )
            chat = gr.Chatbot(
                type="messages", label="Conversation", elem_id="chat", height=420, allow_tags=False, scale=3
            )
        with gr.Row():
            question = gr.Textbox(placeholder="Ask your tutor…", show_label=False, scale=5, elem_id="question")
            send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
        hears, speaks = engines.asr is not None, engines.tts is not None
        with gr.Row():
            mic = gr.Audio(
                sources=["microphone"], type="numpy", label="Ask aloud", elem_id="mic", visible=hears, scale=3
            )
            with gr.Column(scale=2, visible=speaks):
                speak = gr.Checkbox(value=speaks, label="Speak the answers", elem_id="speak")
                # Streamed: each sentence plays as soon as it is spoken, not after the answer.
                voice_out = gr.Audio(
                    label="Tutor's voice", streaming=True, autoplay=True, interactive=False, elem_id="voice"
                )
        self.call.build(chat, saved)
        # Gradio runs one event of a kind at a time unless told otherwise: students must not
        # wait for each other's answers (the engines pace themselves).
        busy = {"concurrency_limit": settings.max_sessions}
        answer_to = [chat, saved, voice_out, talk_view]
        for trigger in (send.click, question.submit):
            trigger(self.ask, [question, tutor_pick, saved, chat, speak], [question, *answer_to], **busy)
        mic.stop_recording(self.ask_aloud, [mic, tutor_pick, saved, chat, speak], [mic, *answer_to], **busy)
        labelled = [question, send, mic, speak, voice_out]  # in words.relabel's order, after picker and chat
        outputs = [tutor_pick, chat, saved, header, idle_view, *labelled]
        tutor_pick.input(self.pick_tutor, [tutor_pick, saved], outputs)
        blocks.load(self.on_load, [saved], [tutor_pick, chat, saved, header, idle_view, status, *labelled])
        blocks.unload(self.call.page_closed)
