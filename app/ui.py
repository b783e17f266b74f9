"""The Gradio Blocks UI, mounted under `UI_PATH`: a student chat tab and a teacher tab.

Both tabs call the same services as the REST routes and the WebSocket; nothing here talks to
an engine directly. Teachers log in with their account; who is logged in is kept in server-side
state, checked on every action, and a teacher acts only on their own tutors (an admin on all).
Secrets never go into a component: Gradio publishes component values in its public config.

A student's session (id and token) is kept in the browser's local storage, so a reload
continues the same conversation; a student sent by the web backend arrives with
`?session=<id>&token=<engine_token>` and talks in that session.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from app.errors import TutorError, Unauthorized
from app.pipeline import (
    AnswerText,
    AudioOut,
    Failure,
    Frame,
    Interrupted,
    NoticeFrame,
    SpeechIn,
    TextDelta,
    Transcription,
    TurnStarted,
    VideoOut,
)
from app.rtc.component import CallDesk, live_call
from app.server import Services
from app.sessions import SessionInfo
from app.speech.audio import PCM, for_recognition, wav_bytes
from avatars.service import VIDEO_SUFFIXES
from kb.service import describe_source
from tutors.accounts import LoginThrottle
from tutors.store import Tutor

LANGUAGE_CHOICES = [("English", "en"), ("中文 (Chinese)", "zh")]
UI_CHAT_ID = "ui"
THINKING = {"role": "assistant", "content": "…"}  # a recording sent, its transcript not back yet
Chat = list[dict[str, str]]
Recording = tuple[int, np.ndarray]  # what a microphone component gives: (rate, samples)


def _browser_secret(data_dir: Path) -> str:
    """BrowserState encrypts in the browser with a key the page carries: it hides nothing from
    that browser. A stable key only lets a saved session survive a server restart."""
    path = data_dir / "ui_state_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
    return path.read_text().strip()


def from_microphone(rate: int, samples: np.ndarray, max_seconds: float) -> PCM:
    """Gradio's (rate, int16 array, maybe stereo) → 16 kHz mono, checked like any audio."""
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    scale = 32768.0 if samples.dtype.kind == "i" else 1.0
    try:
        return for_recognition(PCM(samples.astype(np.float32) / scale, rate), max_seconds)
    except TutorError as exc:
        raise gr.Error(exc.message) from None


def read_limited(file: Path, limit: int) -> bytes:
    if file.stat().st_size > limit:
        raise gr.Error(f"The file is larger than {limit // 2**20} MB.")
    return file.read_bytes()


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


def build_ui(services: Services) -> gr.Blocks:
    tutors, sessions, transcripts = services.tutors, services.sessions, services.transcripts
    media = MediaFiles(services.settings.data_dir / "ui_media")

    # -- shared ---------------------------------------------------------------------------
    def tutor_choices(owner_id: int | None = None) -> list[tuple[str, int]]:
        return [(f"{t.name} — {t.subject}" if t.subject else t.name, t.id) for t in tutors.list(owner_id)]

    def engine_status() -> str:
        stages = services.hub.summary()["stages"]
        lines = [
            f"- **{name}**: `{s['engine']}` — {s['description']} — {s['state']}"
            + (" (fallback)" if s["fallback"] else "")
            + (f": {s['detail']}" if s["detail"] else "")
            for name, s in stages.items()
        ]
        return "**Engines**\n" + "\n".join(lines)

    def greeting_of(tutor: Tutor) -> Chat:
        return [{"role": "assistant", "content": tutor.greeting}] if tutor.greeting else []

    def conversation_of(tutor: Tutor, session_id: str) -> Chat:
        said = [m for m in transcripts.messages(session_id) if m.chat_id == UI_CHAT_ID]
        return greeting_of(tutor) + [{"role": m.role, "content": m.content} for m in said]

    def cited(sources: list[dict[str, Any]]) -> str:
        if not sources:
            return ""
        return "\n\n**Sources:** " + " · ".join(f"[{s['n']}] {describe_source(s)}" for s in sources)

    def show(frame: Frame, history: Chat) -> bool:
        """One frame of a turn, typed, recorded or live on a call, shown in the chat; False if
        it shows nothing."""
        if isinstance(frame, Transcription):
            heard = frame.text or "(nothing was heard)"
            if history and history[-1] == THINKING:
                history.pop()
            history += [{"role": "user", "content": f"🎤 {heard}"}, {"role": "assistant", "content": ""}]
        elif isinstance(frame, NoticeFrame):
            history.insert(-1, {"role": "assistant", "content": f"ⓘ {frame.text}"})
        elif isinstance(frame, Failure):
            history.append({"role": "assistant", "content": f"⚠ {frame.text}"})
        elif isinstance(frame, Interrupted):
            history.append({"role": "assistant", "content": "ⓘ (interrupted)"})
        elif isinstance(frame, TextDelta):
            history[-1]["content"] += frame.text
        elif isinstance(frame, AnswerText):
            history[-1]["content"] = frame.text + cited(frame.sources)
        else:
            return False
        return True

    # -- student --------------------------------------------------------------------------
    def idle_loop(tutor: Tutor | None) -> Any:
        """The tutor's avatar, silent, looping: shown while it listens."""
        if tutor is None or not services.settings.enable_avatar or services.avatars.frames(tutor.avatar_id) is None:
            return gr.update(value=None, visible=False)
        return gr.update(value=str(services.settings.avatar_folder / str(tutor.avatar_id) / "idle.mp4"), visible=True)

    def restore(saved: dict[str, Any], query: dict[str, str]) -> tuple[Any, Chat, dict[str, Any], str, Any]:
        """Tutor picker, chat, saved session, header and avatar for a page (re)load."""
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
            picker = gr.update(choices=tutor_choices(), value=tutor.id, interactive=not locked)
            header = f"### {tutor.name}\n{tutor.subject}"
            return picker, conversation_of(tutor, info.id), state, header, idle_loop(tutor)
        choices = tutor_choices()
        if not choices:
            nobody = "No tutor yet: a teacher creates one in the Teacher tab."
            return gr.update(choices=[], value=None), [], {}, nobody, idle_loop(None)
        tutor = tutors.get(choices[0][1])
        header = f"### {tutor.name}\n{tutor.subject}"
        return gr.update(choices=choices, value=tutor.id), greeting_of(tutor), {}, header, idle_loop(tutor)

    async def on_load(saved: dict[str, Any], request: gr.Request) -> tuple[Any, ...]:
        query = dict(request.query_params) if request else {}
        picker, *rest = await asyncio.to_thread(restore, saved, query)
        desk.grant(request.session_hash, picker.get("value"), rest[1])
        return (picker, *rest, engine_status())

    async def pick_tutor(
        tutor_id: int | None, saved: dict[str, Any], request: gr.Request
    ) -> tuple[Chat, dict[str, Any], str, Any]:
        desk.grant(request.session_hash, tutor_id, saved if saved and saved.get("tutor_id") == tutor_id else {})
        if not tutor_id:
            return [], saved, "", idle_loop(None)
        tutor = await asyncio.to_thread(tutors.get, int(tutor_id))
        header = f"### {tutor.name}\n{tutor.subject}"
        idle = await asyncio.to_thread(idle_loop, tutor)
        if saved and saved.get("tutor_id") == tutor.id:
            return await asyncio.to_thread(conversation_of, tutor, saved["session_id"]), saved, header, idle
        return greeting_of(tutor), {}, header, idle

    async def live_session(tutor_id: int, saved: dict[str, Any]) -> dict[str, Any]:
        if saved and saved.get("tutor_id") == tutor_id:
            try:
                await asyncio.to_thread(sessions.authenticate, saved["session_id"], saved["token"])
                return saved
            except TutorError:
                pass  # ended or expired: start a new one
        info, token = await asyncio.to_thread(sessions.create, tutor_id, None, None)
        return {"session_id": info.id, "token": token, "tutor_id": tutor_id}

    async def call_session(tutor_id: int, saved: dict[str, Any]) -> tuple[dict[str, Any], SessionInfo]:
        state = await live_session(tutor_id, saved)
        return state, await asyncio.to_thread(sessions.require_active, state["session_id"])

    desk = CallDesk(services.calls, services.settings, call_session)

    async def page_closed(request: gr.Request) -> None:
        await desk.forget(request.session_hash)

    async def follow_call(webrtc_id: str | None, history: Chat) -> AsyncIterator[tuple[Chat, dict[str, Any]]]:
        """The live call's words in the chat, from its start (connected) to its end."""
        feed = desk.feeds.get(webrtc_id or "")
        if feed is None:
            return
        history = list(history)
        yield history, feed.state
        while (frame := await feed.frames.get()) is not None:
            if show(frame, history):
                yield history, feed.state

    async def converse(
        question: str | SpeechIn,
        tutor_id: int | None,
        saved: dict[str, Any],
        history: Chat,
        speak: bool,
        page: str | None,
    ) -> AsyncIterator[tuple[Chat, dict[str, Any], bytes | None, str | None]]:
        """One turn, typed or spoken: (chat, session, the next sentence as WAV, or as a
        lip-synced MP4 file when the tutor has an avatar: its sound is in the video)."""
        if not tutor_id:
            raise gr.Error("Pick a tutor first.")
        try:
            state, session = await call_session(int(tutor_id), saved)
            desk.grant(page, int(tutor_id), state)
            history = list(history)
            if isinstance(question, str):
                history.append({"role": "user", "content": question})
            history.append({"role": "assistant", "content": ""} if isinstance(question, str) else dict(THINKING))
            yield history, state, None, None
            animated = False
            async for frame in services.conversation.answer(session, UI_CHAT_ID, question, speak=speak):
                voice, video = None, None
                if isinstance(frame, TurnStarted):
                    animated = frame.avatar is not None
                    continue
                if isinstance(frame, AudioOut) and len(frame.speech.pcm.samples) and not animated:
                    voice = wav_bytes(frame.speech.pcm)
                elif isinstance(frame, VideoOut):
                    video = await asyncio.to_thread(media.keep, frame.mp4)
                elif not show(frame, history):
                    continue
                yield history, state, voice, video
            if history and history[-1] == {"role": "assistant", "content": ""}:
                history.pop()  # nothing was heard: no empty bubble
                yield history, state, None, None
            await asyncio.to_thread(sessions.touch, session.id)
        except TutorError as exc:
            raise gr.Error(exc.message) from None

    async def ask(
        text: str, tutor_id: int | None, saved: dict[str, Any], history: Chat, speak: bool, request: gr.Request
    ) -> AsyncIterator[tuple[Any, ...]]:
        if not text or not text.strip():
            return
        page = request.session_hash
        async for chat_now, state, voice, video in converse(text, tutor_id, saved, history, speak, page):
            yield "", chat_now, state, voice, video

    async def ask_aloud(
        recording: Recording | None,
        tutor_id: int | None,
        saved: dict[str, Any],
        history: Chat,
        speak: bool,
        request: gr.Request,
    ) -> AsyncIterator[tuple[Any, ...]]:
        if recording is None:
            return
        rate, samples = recording
        pcm = await asyncio.to_thread(from_microphone, rate, samples, services.settings.asr_max_seconds)
        question, page = SpeechIn(pcm), request.session_hash
        async for chat_now, state, voice, video in converse(question, tutor_id, saved, history, speak, page):
            yield None, chat_now, state, voice, video

    # -- teacher --------------------------------------------------------------------------
    def signed_in(teacher: dict[str, Any] | None) -> dict[str, Any]:
        if not teacher:
            raise gr.Error(Unauthorized("log in first").message)
        return teacher

    def own_tutor(teacher: dict[str, Any], tutor_id: int | None) -> Tutor:
        if not tutor_id:
            raise gr.Error("Pick one of your tutors first.")
        tutor = tutors.get(int(tutor_id))
        if not teacher["is_admin"] and tutor.owner_id != teacher["id"]:
            raise gr.Error("That tutor belongs to another teacher.")
        return tutor

    def my_choices(teacher: dict[str, Any]) -> list[tuple[str, int]]:
        return tutor_choices(None if teacher["is_admin"] else teacher["id"])

    throttle = LoginThrottle()

    async def login(username: str, password: str) -> tuple[Any, ...]:
        username = (username or "").strip()
        try:
            throttle.check(username)
        except TutorError as exc:
            raise gr.Error(exc.message) from None
        teacher = await asyncio.to_thread(services.teachers.verify, username, password or "")
        if teacher is None:
            throttle.failed(username)
            raise gr.Error("Wrong username or password.")
        throttle.succeeded(username)
        state = {"id": teacher.id, "username": teacher.username, "is_admin": teacher.is_admin}
        choices = await asyncio.to_thread(my_choices, state)
        role = "admin" if teacher.is_admin else "teacher"
        return (
            state,
            gr.update(visible=False),
            gr.update(visible=True),
            f"Signed in as **{teacher.username}** ({role}).",
            gr.update(choices=choices, value=None),
            "",  # the password box is cleared
            gr.update(visible=True),
            gr.update(choices=await asyncio.to_thread(kb_choices), value=None),
            gr.update(visible=True),
            await asyncio.to_thread(avatar_rows),
        )

    def logout() -> tuple[Any, ...]:
        hidden = gr.update(visible=False)
        return None, gr.update(visible=True), hidden, "", gr.update(choices=[], value=None), hidden, hidden

    def editor_values(tutor: Tutor | None) -> list[Any]:
        if tutor is None:
            return ["", "", "en", "", "", services.settings.llm_temperature, "", "", "", ""]
        temperature = tutor.temperature if tutor.temperature is not None else services.settings.llm_temperature
        return [
            tutor.name,
            tutor.subject,
            tutor.language,
            tutor.llm_model or "",
            tutor.voice or "",
            temperature,
            tutor.persona,
            tutor.greeting,
            tutor.avatar_id or "",
            ", ".join(tutor.kb_ids),
        ]

    def blank_editor() -> list[Any]:
        return [*editor_values(None), "", gr.update(choices=[], value=None), []]

    async def select_tutor(tutor_id: int | None, teacher: dict[str, Any] | None) -> list[Any]:
        if not tutor_id or not teacher:
            # Emptied by a login or a deletion: leave the editor alone, the teacher may be typing.
            return [gr.skip() for _ in blank_editor()]
        tutor = await asyncio.to_thread(own_tutor, signed_in(teacher), tutor_id)
        usage = await asyncio.to_thread(transcripts.usage, tutor.id)
        listed = await asyncio.to_thread(transcripts.sessions, tutor.id)
        figures = (
            f"**Usage** — sessions: {usage.sessions} (active {usage.active_sessions}), students: {usage.students}, "
            f"questions: {usage.turns}, average answer: "
            + (f"{usage.avg_answer_ms / 1000:.1f} s" if usage.avg_answer_ms is not None else "—")
        )
        session_choices = [
            (
                f"{s.created_at:%Y-%m-%d %H:%M} · student {s.student_id or '—'} · {s.turns} question(s) · {s.status}",
                s.session_id,
            )
            for s in listed
        ]
        return [*editor_values(tutor), figures, gr.update(choices=session_choices, value=None), []]

    async def show_transcript(session_id: str | None, tutor_id: int | None, teacher: dict[str, Any] | None) -> Chat:
        if not session_id:
            return []
        tutor = await asyncio.to_thread(own_tutor, signed_in(teacher), tutor_id)
        info = await asyncio.to_thread(sessions.get, session_id)
        if info.tutor_id != tutor.id:
            raise gr.Error("That session belongs to another tutor.")
        said = await asyncio.to_thread(transcripts.messages, session_id)
        return [{"role": m.role, "content": f"{m.content}\n\n*{m.created_at:%H:%M:%S}*"} for m in said]

    async def save_tutor(
        teacher: dict[str, Any] | None,
        tutor_id: int | None,
        name: str,
        subject: str,
        language: str,
        llm_model: str,
        voice: str,
        temperature: float,
        persona: str,
        greeting: str,
        avatar_id: str,
        kb_ids: str,
    ) -> tuple[str, Any]:
        teacher = signed_in(teacher)
        if not name or not name.strip():
            raise gr.Error("A tutor needs a name.")
        values = {
            "name": name.strip(),
            "subject": subject or "",
            "language": language or "en",
            "llm_model": (llm_model or "").strip() or None,
            "voice": (voice or "").strip() or None,
            "temperature": float(temperature),
            "persona": persona or "",
            "greeting": greeting or "",
            "avatar_id": (avatar_id or "").strip() or None,
            "kb_ids": [k.strip() for k in (kb_ids or "").split(",") if k.strip()],
        }
        try:
            # An empty dropdown arrives as None or "" depending on how it was emptied.
            if not tutor_id:
                tutor = await asyncio.to_thread(tutors.create, {**values, "owner_id": teacher["id"]})
                verb = "Created"
            else:
                await asyncio.to_thread(own_tutor, teacher, tutor_id)
                tutor = await asyncio.to_thread(tutors.update, int(tutor_id), values)
                verb = "Saved"
        except TutorError as exc:
            raise gr.Error(exc.message) from None
        choices = await asyncio.to_thread(my_choices, teacher)
        return f"{verb} tutor **{tutor.name}** (id {tutor.id}).", gr.update(choices=choices, value=tutor.id)

    async def delete_tutor(teacher: dict[str, Any] | None, tutor_id: int | None) -> list[Any]:
        teacher = signed_in(teacher)
        tutor = await asyncio.to_thread(own_tutor, teacher, tutor_id)
        try:
            await asyncio.to_thread(tutors.delete, tutor.id)
        except TutorError as exc:
            raise gr.Error(exc.message) from None
        choices = await asyncio.to_thread(my_choices, teacher)
        return [f"Deleted tutor **{tutor.name}**.", gr.update(choices=choices, value=None), *blank_editor()]

    # -- knowledge bases (teacher) ----------------------------------------------------------
    def kb_choices() -> list[tuple[str, str]]:
        return [(f"{k.name} ({k.id})", k.id) for k in services.kbs.list()]

    def document_rows(kb_id: str | None) -> list[list[Any]]:
        if not kb_id:
            return []
        return [
            [d.filename, d.status, f"{d.progress:.0%}", d.pages or "", d.chunks, d.error or "", d.id]
            for d in services.kbs.documents(kb_id)
        ]

    async def create_kb(teacher: dict[str, Any] | None, kb_name: str) -> tuple[str, Any]:
        signed_in(teacher)
        if not kb_name or not kb_name.strip():
            raise gr.Error("A knowledge base needs a name.")
        created = await asyncio.to_thread(services.kbs.create, kb_name.strip())
        choices = await asyncio.to_thread(kb_choices)
        return f"Created knowledge base **{created.name}** (id `{created.id}`).", gr.update(
            choices=choices, value=created.id
        )

    async def show_kb(teacher: dict[str, Any] | None, kb_id: str | None) -> list[list[Any]]:
        signed_in(teacher)
        return await asyncio.to_thread(document_rows, kb_id)

    async def upload(
        teacher: dict[str, Any] | None,
        kb_id: str | None,
        path: str | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008  (Gradio injects its tracker through this default)
    ) -> tuple[str, list[list[Any]]]:
        signed_in(teacher)
        if not kb_id or not path:
            raise gr.Error("Pick a knowledge base and a file first.")
        file = Path(path)
        data = await asyncio.to_thread(read_limited, file, services.settings.kb_max_upload_bytes)
        try:
            document = await asyncio.to_thread(services.kbs.add_document, kb_id, file.name, data)
        except TutorError as exc:
            raise gr.Error(exc.message) from None
        task = asyncio.create_task(services.kbs.ingest(document.id))
        while not task.done():
            current = await asyncio.to_thread(services.kbs.document, kb_id, document.id)
            progress(current.progress, desc=f"Indexing {file.name}")
            await asyncio.sleep(0.25)
        done = task.result()
        rows = await asyncio.to_thread(document_rows, kb_id)
        if done.status == "failed":
            return f"**{file.name}** could not be indexed: {done.error}", rows
        pages = f"{done.pages} page(s), " if done.pages else ""
        return f"Indexed **{file.name}**: {pages}{done.chunks} passage(s).", rows

    async def delete_document(teacher: dict[str, Any] | None, kb_id: str | None, doc_id: str) -> tuple[str, Any]:
        signed_in(teacher)
        if not kb_id or not (doc_id or "").strip():
            raise gr.Error("Pick a knowledge base and paste the document id to delete.")
        try:
            await asyncio.to_thread(services.kbs.delete_document, kb_id, doc_id.strip())
        except TutorError as exc:
            raise gr.Error(exc.message) from None
        return "Deleted.", await asyncio.to_thread(document_rows, kb_id)

    async def try_question(teacher: dict[str, Any] | None, kb_id: str | None, query: str) -> str:
        signed_in(teacher)
        if not kb_id or not (query or "").strip():
            raise gr.Error("Pick a knowledge base and type a question.")
        hits = await asyncio.to_thread(services.kbs.search, [kb_id], query, 5)
        if not hits:
            return "Nothing relevant: a tutor would say the material does not cover this."
        return "\n\n".join(f"**{h.score:.2f}** — {describe_source(h.source)}\n> {h.text[:300]}" for h in hits)

    # -- avatars (teacher) ------------------------------------------------------------------
    def avatar_rows() -> list[list[Any]]:
        return [
            [a.avatar_id, a.status, f"{a.progress:.0%}", a.stage, a.error or "", a.source]
            for a in services.avatars.list()
        ]

    async def prepare_avatar(
        teacher: dict[str, Any] | None,
        avatar_id: str,
        path: str | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008  (Gradio injects its tracker through this default)
    ) -> tuple[str, list[list[Any]]]:
        signed_in(teacher)
        avatar_id = (avatar_id or "").strip()
        if not avatar_id or not path:
            raise gr.Error("Give the avatar an id and choose a video.")
        file = Path(path)
        data = await asyncio.to_thread(read_limited, file, services.settings.avatar_max_upload_bytes)
        try:
            await asyncio.to_thread(services.avatars.create_from_upload, avatar_id, file.name, data)
        except TutorError as exc:
            raise gr.Error(exc.message) from None
        services.avatars.schedule(avatar_id)
        while (avatar := await asyncio.to_thread(services.avatars.get, avatar_id)).status == "preparing":
            progress(avatar.progress, desc=f"Preparing {avatar_id}: {avatar.stage}")
            await asyncio.sleep(0.25)
        rows = await asyncio.to_thread(avatar_rows)
        if avatar.status == "failed":
            return f"**{avatar_id}** could not be prepared: {avatar.error}", rows
        return f"Avatar **{avatar_id}** is ready: put its id in a tutor's *Avatar id* to use it.", rows

    async def delete_avatar(teacher: dict[str, Any] | None, avatar_id: str) -> tuple[str, list[list[Any]]]:
        signed_in(teacher)
        try:
            await asyncio.to_thread(services.avatars.delete, (avatar_id or "").strip())
        except TutorError as exc:
            raise gr.Error(exc.message) from None
        return "Deleted.", await asyncio.to_thread(avatar_rows)

    # -- layout ---------------------------------------------------------------------------
    # System fonts: the default theme fetches Google Fonts, which stalls pages on offline boxes.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    with gr.Blocks(title="Virtual Tutor", analytics_enabled=False, theme=theme) as blocks:
        gr.Markdown("# Virtual Tutor")
        saved = gr.BrowserState(
            {}, storage_key="virtual-tutor-session", secret=_browser_secret(services.settings.data_dir)
        )
        with gr.Tab("Student", elem_id="student-tab"):
            with gr.Row():
                tutor_pick = gr.Dropdown(label="Tutor", choices=[], elem_id="tutor-pick")
                status = gr.Markdown(elem_id="engine-status")
            header = gr.Markdown(elem_id="tutor-header")
            with gr.Row():
                with gr.Column(scale=2, min_width=240, visible=services.settings.enable_avatar):
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
            settings = services.settings
            with gr.Row():
                mic = gr.Audio(
                    sources=["microphone"],
                    type="numpy",
                    label="Ask aloud",
                    elem_id="mic",
                    visible=settings.enable_asr,
                    scale=3,
                )
                with gr.Column(scale=2, visible=settings.enable_tts):
                    speak = gr.Checkbox(value=settings.enable_tts, label="Speak the answers", elem_id="speak")
                    # Streamed: each sentence plays as soon as it is spoken, not after the answer.
                    voice_out = gr.Audio(
                        label="Tutor's voice", streaming=True, autoplay=True, interactive=False, elem_id="voice"
                    )
            calls_on = settings.enable_asr and settings.enable_tts and services.calls.configured
            with gr.Row(visible=calls_on):
                # Live: talk, and see and hear the tutor answer (WebRTC, relayed through TURN).
                call = live_call(
                    desk,
                    label="Live call",
                    elem_id="live-call",
                    full_screen=False,
                    button_labels={"start": "Start call", "stop": "Hang up", "waiting": "Connecting…"},
                )
            # Gradio runs one event of a kind at a time unless told otherwise: students must not
            # wait for each other's answers (the engines pace themselves).
            busy = {"concurrency_limit": settings.max_sessions}
            for trigger in (send.click, question.submit):
                trigger(
                    ask,
                    [question, tutor_pick, saved, chat, speak],
                    [question, chat, saved, voice_out, talk_view],
                    **busy,
                )
            mic.stop_recording(
                ask_aloud, [mic, tutor_pick, saved, chat, speak], [mic, chat, saved, voice_out, talk_view], **busy
            )
            tutor_pick.input(pick_tutor, [tutor_pick, saved], [chat, saved, header, idle_view])
            call.tick(follow_call, [call, chat], [chat, saved], **busy)

        with gr.Tab("Teacher", elem_id="teacher-tab"):
            teacher = gr.State(None)
            with gr.Column(visible=True) as login_box:
                username = gr.Textbox(label="Username", elem_id="login-user")
                password = gr.Textbox(label="Password", type="password", elem_id="login-password")
                login_button = gr.Button("Log in", variant="primary", elem_id="login")
            with gr.Column(visible=False) as panel:
                with gr.Row():
                    who = gr.Markdown(elem_id="signed-in")
                    logout_button = gr.Button("Log out", size="sm", scale=0)
                with gr.Row():
                    my_tutors = gr.Dropdown(label="Your tutors", choices=[], elem_id="my-tutors", scale=4)
                    new_button = gr.Button("New tutor", scale=1, elem_id="new-tutor")
                with gr.Row():
                    name = gr.Textbox(label="Name", elem_id="tutor-name")
                    subject = gr.Textbox(label="Subject", elem_id="tutor-subject")
                    language = gr.Dropdown(label="Language", choices=LANGUAGE_CHOICES, value="en")
                with gr.Row():
                    llm_model = gr.Textbox(label="LLM model (Ollama)", placeholder=services.settings.default_llm_model)
                    voice = gr.Textbox(label="Voice", placeholder="zh-CN-XiaoxiaoNeural")
                    temperature = gr.Slider(0, 2, value=0.4, step=0.05, label="Temperature")
                persona = gr.Textbox(label="Persona / system prompt", lines=4, elem_id="tutor-persona")
                greeting = gr.Textbox(label="Greeting", elem_id="tutor-greeting")
                with gr.Row():
                    avatar_id = gr.Textbox(label="Avatar id", elem_id="tutor-avatar")
                    kb_ids = gr.Textbox(label="Knowledge bases (ids, comma-separated)", elem_id="tutor-kbs")
                with gr.Row():
                    save_button = gr.Button("Save tutor", variant="primary", elem_id="save-tutor")
                    delete_button = gr.Button("Delete tutor", variant="stop", elem_id="delete-tutor")
                notice = gr.Markdown(elem_id="teacher-notice")
                with gr.Row():
                    usage = gr.Markdown(elem_id="usage")
                    refresh_button = gr.Button("Refresh", size="sm", scale=0, elem_id="refresh")
                session_pick = gr.Dropdown(label="Transcripts", choices=[], elem_id="session-pick")
                transcript = gr.Chatbot(
                    type="messages", label="Transcript", elem_id="transcript", height=360, allow_tags=False
                )

            editor = [name, subject, language, llm_model, voice, temperature, persona, greeting, avatar_id, kb_ids]
            for trigger in (my_tutors.change, refresh_button.click):
                trigger(select_tutor, [my_tutors, teacher], [*editor, usage, session_pick, transcript])
            new_button.click(
                lambda: [gr.update(value=None), *blank_editor()],
                None,
                [my_tutors, *editor, usage, session_pick, transcript],
            )
            save_button.click(save_tutor, [teacher, my_tutors, *editor], [notice, my_tutors])
            delete_button.click(
                delete_tutor, [teacher, my_tutors], [notice, my_tutors, *editor, usage, session_pick, transcript]
            )
            session_pick.change(show_transcript, [session_pick, my_tutors, teacher], [transcript])

            with gr.Column(visible=False) as kb_panel, gr.Accordion("Knowledge bases", open=True):
                with gr.Row():
                    kb_pick = gr.Dropdown(label="Knowledge base", choices=[], elem_id="kb-pick", scale=3)
                    kb_name = gr.Textbox(label="New knowledge base", elem_id="kb-name", scale=2)
                    kb_create = gr.Button("Create", scale=1, elem_id="kb-create")
                with gr.Row():
                    kb_file = gr.File(
                        label="Upload PDF, DOCX, Markdown, HTML or text",
                        file_types=[".pdf", ".docx", ".md", ".markdown", ".html", ".htm", ".txt"],
                        elem_id="kb-file",
                    )
                    kb_upload = gr.Button("Index file", variant="primary", elem_id="kb-upload")
                kb_notice = gr.Markdown(elem_id="kb-notice")
                kb_docs = gr.Dataframe(
                    headers=["file", "status", "progress", "pages", "passages", "error", "id"],
                    interactive=False,
                    elem_id="kb-docs",
                )
                with gr.Row():
                    doc_id = gr.Textbox(label="Document id to delete", scale=3)
                    doc_delete = gr.Button("Delete document", variant="stop", scale=1)
                kb_query = gr.Textbox(label="Test a question", elem_id="kb-query")
                kb_results = gr.Markdown(elem_id="kb-results")

            with gr.Column(visible=False) as avatar_panel, gr.Accordion("Avatars", open=True):
                with gr.Row():
                    avatar_new = gr.Textbox(label="New avatar id", elem_id="avatar-id", scale=2)
                    avatar_file = gr.File(
                        label="A video of one person facing the camera (a few seconds is enough)",
                        file_types=sorted(VIDEO_SUFFIXES),
                        elem_id="avatar-file",
                        scale=3,
                    )
                    avatar_make = gr.Button("Prepare avatar", variant="primary", elem_id="avatar-make", scale=1)
                avatar_notice = gr.Markdown(elem_id="avatar-notice")
                avatar_list = gr.Dataframe(
                    headers=["avatar id", "status", "progress", "stage", "error", "source"],
                    interactive=False,
                    elem_id="avatar-list",
                )
                with gr.Row():
                    avatar_gone = gr.Textbox(label="Avatar id to delete", scale=3)
                    avatar_delete = gr.Button("Delete avatar", variant="stop", scale=1)
            avatar_make.click(prepare_avatar, [teacher, avatar_new, avatar_file], [avatar_notice, avatar_list])
            avatar_delete.click(delete_avatar, [teacher, avatar_gone], [avatar_notice, avatar_list])

            signed_in_outputs = [
                teacher,
                login_box,
                panel,
                who,
                my_tutors,
                password,
                kb_panel,
                kb_pick,
                avatar_panel,
                avatar_list,
            ]
            login_button.click(login, [username, password], signed_in_outputs)
            password.submit(login, [username, password], signed_in_outputs)
            logout_button.click(logout, None, [teacher, login_box, panel, who, my_tutors, kb_panel, avatar_panel])
            kb_create.click(create_kb, [teacher, kb_name], [kb_notice, kb_pick])
            kb_pick.change(show_kb, [teacher, kb_pick], [kb_docs])
            kb_upload.click(upload, [teacher, kb_pick, kb_file], [kb_notice, kb_docs])
            doc_delete.click(delete_document, [teacher, kb_pick, doc_id], [kb_notice, kb_docs])
            kb_query.submit(try_question, [teacher, kb_pick, kb_query], [kb_results])

        blocks.load(on_load, [saved], [tutor_pick, chat, saved, header, idle_view, status])
        blocks.unload(page_closed)
    return blocks
