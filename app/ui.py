"""The Gradio Blocks UI, mounted under `UI_PATH`: a student chat tab and a teacher tab.

Both tabs call the same services as the REST routes and the WebSocket; nothing here talks to
an engine directly. The teacher tab asks for the management API key when one is configured;
the key is checked on the server and never placed in a component (Gradio publishes component
values in its public config).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from app.errors import TutorError, Unauthorized
from app.pipeline import AnswerText, NoticeFrame, TextDelta
from app.server import Services
from app.sessions import SessionInfo

LANGUAGE_CHOICES = [("English", "en"), ("中文 (Chinese)", "zh")]
UI_CHAT_ID = "ui"


def build_ui(services: Services) -> gr.Blocks:
    settings = services.settings

    def tutor_choices() -> list[tuple[str, int]]:
        return [(f"{t.name} — {t.subject}" if t.subject else t.name, t.id) for t in services.tutors.list()]

    def engine_status() -> str:
        stages = services.hub.summary()["stages"]
        lines = [
            f"- **{name}**: `{s['engine']}` — {s['description']} — {s['state']}"
            + (" (fallback)" if s["fallback"] else "")
            + (f": {s['detail']}" if s["detail"] else "")
            for name, s in stages.items()
        ]
        return "**Engines**\n" + "\n".join(lines)

    async def on_load() -> tuple[Any, str]:
        choices = await asyncio.to_thread(tutor_choices)
        return gr.update(choices=choices, value=choices[0][1] if choices else None), engine_status()

    async def pick_tutor(tutor_id: int | None) -> tuple[list[dict[str, str]], None, str]:
        if tutor_id is None:
            return [], None, ""
        tutor = await asyncio.to_thread(services.tutors.get, int(tutor_id))
        greeting = [{"role": "assistant", "content": tutor.greeting}] if tutor.greeting else []
        return greeting, None, f"### {tutor.name}\n{tutor.subject}"

    async def live_session(tutor_id: int, session_id: str | None) -> SessionInfo:
        if session_id:
            info = await asyncio.to_thread(services.sessions.get, session_id)
            if info.active and info.tutor_id == tutor_id:
                return info
        info, _token = await asyncio.to_thread(services.sessions.create, tutor_id, None, None)
        return info

    async def ask(
        text: str, tutor_id: int | None, session_id: str | None, history: list[dict[str, str]]
    ) -> AsyncIterator[tuple[str, list[dict[str, str]], str | None]]:
        if not text or not text.strip():
            return
        if tutor_id is None:
            raise gr.Error("Pick a tutor first.")
        try:
            session = await live_session(int(tutor_id), session_id)
            history = [*history, {"role": "user", "content": text}, {"role": "assistant", "content": ""}]
            yield "", history, session.id
            async for frame in services.conversation.answer(session, UI_CHAT_ID, text):
                if isinstance(frame, NoticeFrame):
                    history.insert(-1, {"role": "assistant", "content": f"ⓘ {frame.text}"})
                elif isinstance(frame, TextDelta):
                    history[-1]["content"] += frame.text
                elif isinstance(frame, AnswerText):
                    history[-1]["content"] = frame.text
                else:
                    continue
                yield "", history, session.id
        except TutorError as exc:
            raise gr.Error(exc.message) from None

    def check_key(given: str) -> None:
        key = settings.management_api_key
        if key is not None and not hmac.compare_digest((given or "").encode(), key.get_secret_value().encode()):
            raise gr.Error(Unauthorized("wrong management API key").message)

    def tutor_rows() -> list[list[Any]]:
        return [[t.id, t.name, t.subject, t.language, t.llm_model or ""] for t in services.tutors.list()]

    async def create_tutor(
        key: str, name: str, subject: str, persona: str, greeting: str, language: str
    ) -> tuple[str, list[list[Any]], Any]:
        check_key(key)
        if not name or not name.strip():
            raise gr.Error("A tutor needs a name.")
        tutor = await asyncio.to_thread(
            services.tutors.create,
            {"name": name.strip(), "subject": subject, "persona": persona, "greeting": greeting, "language": language},
        )
        rows = await asyncio.to_thread(tutor_rows)
        choices = await asyncio.to_thread(tutor_choices)
        return f"Created tutor **{tutor.name}** (id {tutor.id}).", rows, gr.update(choices=choices)

    async def list_tutors(key: str) -> list[list[Any]]:
        check_key(key)
        return await asyncio.to_thread(tutor_rows)

    # System fonts: the default theme fetches Google Fonts, which stalls pages on offline boxes.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    with gr.Blocks(title="Virtual Tutor", analytics_enabled=False, theme=theme) as blocks:
        gr.Markdown("# Virtual Tutor")
        with gr.Tab("Student", elem_id="student-tab"):
            with gr.Row():
                tutor_pick = gr.Dropdown(label="Tutor", choices=[], elem_id="tutor-pick")
                status = gr.Markdown(elem_id="engine-status")
            header = gr.Markdown()
            chat = gr.Chatbot(type="messages", label="Conversation", elem_id="chat", height=420, allow_tags=False)
            session_state = gr.State(None)
            with gr.Row():
                question = gr.Textbox(
                    placeholder="Ask your tutor…", show_label=False, scale=5, elem_id="question"
                )
                send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
            for trigger in (send.click, question.submit):
                trigger(ask, [question, tutor_pick, session_state, chat], [question, chat, session_state])
            tutor_pick.change(pick_tutor, [tutor_pick], [chat, session_state, header])

        with gr.Tab("Teacher", elem_id="teacher-tab"):
            key_box = gr.Textbox(
                label="Management API key",
                type="password",
                visible=settings.management_api_key is not None,
            )
            with gr.Row():
                name = gr.Textbox(label="Name", elem_id="tutor-name")
                subject = gr.Textbox(label="Subject", elem_id="tutor-subject")
                language = gr.Dropdown(label="Language", choices=LANGUAGE_CHOICES, value="en")
            persona = gr.Textbox(label="Persona / system prompt", lines=4, elem_id="tutor-persona")
            greeting = gr.Textbox(label="Greeting", elem_id="tutor-greeting")
            with gr.Row():
                create = gr.Button("Create tutor", variant="primary", elem_id="create-tutor")
                refresh = gr.Button("Refresh list")
            notice = gr.Markdown(elem_id="teacher-notice")
            table = gr.Dataframe(headers=["id", "name", "subject", "language", "model"], interactive=False)
            create.click(
                create_tutor, [key_box, name, subject, persona, greeting, language], [notice, table, tutor_pick]
            )
            refresh.click(list_tutors, [key_box], [table])

        blocks.load(on_load, None, [tutor_pick, status])
    return blocks
