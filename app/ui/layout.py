"""The Gradio Blocks UI, mounted under `UI_PATH`: a Student tab and a Teacher tab.

Every tab calls the same services as the REST routes and the WebSocket; nothing here talks to
an engine directly.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import gradio as gr

from app.rtc.component import CAMERA_OPTIONAL
from app.services import Services
from app.ui.avatars import AvatarPanel
from app.ui.knowledge import KnowledgePanel
from app.ui.student import StudentTab
from app.ui.teacher import TeacherTab


def _browser_secret(data_dir: Path) -> str:
    """BrowserState encrypts in the browser with a key the page carries: it hides nothing from
    that browser. A stable key only lets a saved session survive a server restart."""
    path = data_dir / "ui_state_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
    return path.read_text().strip()


def build_ui(services: Services) -> gr.Blocks:
    student, staff = StudentTab(services), TeacherTab(services)
    panels = [KnowledgePanel(services), AvatarPanel(services)]
    # System fonts: the default theme fetches Google Fonts, which stalls pages on offline boxes.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    with gr.Blocks(title="Virtual Tutor", analytics_enabled=False, theme=theme, head=CAMERA_OPTIONAL) as blocks:
        gr.Markdown("# Virtual Tutor")
        saved = gr.BrowserState(
            {}, storage_key="virtual-tutor-session", secret=_browser_secret(services.settings.data_dir)
        )
        with gr.Tab("Student", elem_id="student-tab"):
            student.build(blocks, saved)
        with gr.Tab("Teacher", elem_id="teacher-tab"):
            teacher = gr.State(None)
            staff.build(teacher)
            for panel in panels:
                panel.build(teacher)
            staff.connect(teacher, panels)
    return blocks
