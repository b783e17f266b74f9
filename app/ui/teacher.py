"""The Teacher tab: log in with a teacher account, build and edit tutors, read their
transcripts and usage. A teacher acts only on their own tutors, an admin on all; who is
logged in is kept server-side and checked on every action."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

import gradio as gr

from app.services import Services
from app.ui.chat import Chat
from app.ui.common import Teacher, check_owns, friendly, signed_in, tutor_choices, whose
from tutors.accounts import LoginThrottle
from tutors.store import Tutor

LANGUAGE_CHOICES = [("English", "en"), ("中文 (Chinese)", "zh")]


class TeacherPanel(Protocol):
    """A part of the Teacher tab shown once a teacher logs in (knowledge bases, avatars)."""

    column: gr.Column
    filled: list[Any]  # the components it fills at login

    async def fill(self, teacher: Teacher) -> list[Any]: ...


class TeacherTab:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.throttle = LoginThrottle()

    def own_tutor(self, teacher: Teacher, tutor_id: int | None) -> Tutor:
        if not tutor_id:
            raise gr.Error("Pick one of your tutors first.")
        tutor = self.services.tutors.get(int(tutor_id))
        check_owns(teacher, tutor.owner_id, "That tutor")
        return tutor

    def my_choices(self, teacher: Teacher) -> list[tuple[str, int]]:
        return tutor_choices(self.services.tutors, whose(teacher))

    # -- logging in -----------------------------------------------------------------------
    async def login(self, username: str, password: str) -> tuple[Any, ...]:
        """(who, login box, panel, greeting line, their tutors, the cleared password)."""
        username = (username or "").strip()
        self.throttle.check(username)
        teacher = await asyncio.to_thread(self.services.teachers.verify, username, password or "")
        if teacher is None:
            self.throttle.failed(username)
            raise gr.Error("Wrong username or password.")
        self.throttle.succeeded(username)
        state = {"id": teacher.id, "username": teacher.username, "is_admin": teacher.is_admin}
        choices = await asyncio.to_thread(self.my_choices, state)
        role = "admin" if teacher.is_admin else "teacher"
        return (
            state,
            gr.update(visible=False),
            gr.update(visible=True),
            f"Signed in as **{teacher.username}** ({role}).",
            gr.update(choices=choices, value=None),
            "",
        )

    @staticmethod
    def logout() -> tuple[Any, ...]:
        """(who, login box, panel, greeting line, their tutors)."""
        return None, gr.update(visible=True), gr.update(visible=False), "", gr.update(choices=[], value=None)

    # -- the tutor editor -----------------------------------------------------------------
    def editor_values(self, tutor: Tutor | None) -> list[Any]:
        default_temperature = self.services.settings.llm_temperature
        if tutor is None:
            return ["", "", "en", "", "", default_temperature, "", "", "", ""]
        temperature = tutor.temperature if tutor.temperature is not None else default_temperature
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

    def blank_editor(self) -> list[Any]:
        return [*self.editor_values(None), "", gr.update(choices=[], value=None), []]

    @friendly
    async def select_tutor(self, tutor_id: int | None, teacher: Teacher | None) -> list[Any]:
        if not tutor_id or not teacher:
            return [gr.skip() for _ in self.blank_editor()]  # nothing picked: the editor stays
        tutor = await asyncio.to_thread(self.own_tutor, signed_in(teacher), tutor_id)
        return await self.loaded(tutor)

    async def loaded(self, tutor: Tutor) -> list[Any]:
        """The editor, usage figures, transcripts picker and transcript for one tutor."""
        transcripts = self.services.transcripts
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
        return [*self.editor_values(tutor), figures, gr.update(choices=session_choices, value=None), []]

    @friendly
    async def show_transcript(self, session_id: str | None, tutor_id: int | None, teacher: Teacher | None) -> Chat:
        if not session_id:
            return []
        tutor = await asyncio.to_thread(self.own_tutor, signed_in(teacher), tutor_id)
        info = await asyncio.to_thread(self.services.sessions.get, session_id)
        if info.tutor_id != tutor.id:
            raise gr.Error("That session belongs to another tutor.")
        said = await asyncio.to_thread(self.services.transcripts.messages, session_id)
        return [{"role": m.role, "content": f"{m.content}\n\n*{m.created_at:%H:%M:%S}*"} for m in said]

    @friendly
    async def save_tutor(
        self,
        teacher: Teacher | None,
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
    ) -> list[Any]:
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
        tutors = self.services.tutors
        # An empty dropdown arrives as None or "" depending on how it was emptied.
        if not tutor_id:
            tutor = await asyncio.to_thread(tutors.create, {**values, "owner_id": teacher["id"]})
            verb = "Created"
        else:
            await asyncio.to_thread(self.own_tutor, teacher, tutor_id)
            tutor = await asyncio.to_thread(tutors.update, int(tutor_id), values)
            verb = "Saved"
        choices = await asyncio.to_thread(self.my_choices, teacher)
        # The saved tutor is loaded back here, not by the picker's change event: that event
        # could land after the teacher had started typing again, and undo it.
        notice = f"{verb} tutor **{tutor.name}** (id {tutor.id})."
        return [notice, gr.update(choices=choices, value=tutor.id), *await self.loaded(tutor)]

    @friendly
    async def delete_tutor(self, teacher: Teacher | None, tutor_id: int | None) -> list[Any]:
        teacher = signed_in(teacher)
        tutor = await asyncio.to_thread(self.own_tutor, teacher, tutor_id)
        await asyncio.to_thread(self.services.tutors.delete, tutor.id)
        choices = await asyncio.to_thread(self.my_choices, teacher)
        return [f"Deleted tutor **{tutor.name}**.", gr.update(choices=choices, value=None), *self.blank_editor()]

    # -- layout ---------------------------------------------------------------------------
    def build(self, teacher: gr.State) -> None:
        """The login box and the tutor editor."""
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
                default_model = self.services.settings.default_llm_model
                llm_model = gr.Textbox(label="LLM model (Ollama)", placeholder=default_model)
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
        loaded = [*editor, usage, session_pick, transcript]
        # `input`, not `change`: only the teacher's own pick loads a tutor (see save_tutor).
        for trigger in (my_tutors.input, refresh_button.click):
            trigger(self.select_tutor, [my_tutors, teacher], loaded)
        new_button.click(
            lambda: [gr.update(value=None), *self.blank_editor()],
            None,
            [my_tutors, *loaded],
        )
        save_button.click(self.save_tutor, [teacher, my_tutors, *editor], [notice, my_tutors, *loaded])
        delete_button.click(self.delete_tutor, [teacher, my_tutors], [notice, my_tutors, *loaded])
        session_pick.change(self.show_transcript, [session_pick, my_tutors, teacher], [transcript])
        self._login_box, self._panel, self._who, self._my_tutors = login_box, panel, who, my_tutors
        self._username, self._password = username, password
        self._login_button, self._logout_button = login_button, logout_button

    def connect(self, teacher: gr.State, panels: Sequence[TeacherPanel]) -> None:
        """Logging in opens the tutor editor and every panel, logging out closes them."""

        @friendly
        async def log_in(username: str, password: str) -> tuple[Any, ...]:
            signed = await self.login(username, password)
            opened = [[gr.update(visible=True), *await panel.fill(signed[0])] for panel in panels]
            return (*signed, *(value for values in opened for value in values))

        def log_out() -> tuple[Any, ...]:
            return (*self.logout(), *(gr.update(visible=False) for _ in panels))

        opened = [component for panel in panels for component in (panel.column, *panel.filled)]
        signed_in_outputs = [teacher, self._login_box, self._panel, self._who, self._my_tutors, self._password]
        for trigger in (self._login_button.click, self._password.submit):
            trigger(log_in, [self._username, self._password], [*signed_in_outputs, *opened])
        closed = [teacher, self._login_box, self._panel, self._who, self._my_tutors, *(p.column for p in panels)]
        self._logout_button.click(log_out, None, closed)
