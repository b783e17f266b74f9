"""The Teacher tab's avatars: upload a short video of one person facing the camera, watch it
being prepared, delete it. A tutor uses one through its *Avatar id*."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import gradio as gr

from app.services import Services
from app.ui.common import Teacher, check_owns, friendly, read_limited, signed_in, whose
from avatars.service import VIDEO_SUFFIXES


class AvatarPanel:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.avatars = services.avatars

    def avatar_rows(self, teacher: Teacher) -> list[list[Any]]:
        return [
            [a.avatar_id, a.status, f"{a.progress:.0%}", a.stage, a.error or "", a.source]
            for a in self.avatars.list(whose(teacher))
        ]

    async def fill(self, teacher: Teacher) -> list[Any]:
        return [await asyncio.to_thread(self.avatar_rows, teacher)]

    @friendly
    async def prepare_avatar(
        self,
        teacher: Teacher | None,
        avatar_id: str,
        path: str | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008  (Gradio injects its tracker through this default)
    ) -> tuple[str, list[list[Any]]]:
        teacher = signed_in(teacher)
        avatar_id = (avatar_id or "").strip()
        if not avatar_id or not path:
            raise gr.Error("Give the avatar an id and choose a video.")
        file = Path(path)
        data = await asyncio.to_thread(read_limited, file, self.services.settings.avatar_max_upload_bytes)
        await asyncio.to_thread(self.avatars.create_from_upload, avatar_id, file.name, data, teacher["id"])
        self.avatars.schedule(avatar_id)
        while (avatar := await asyncio.to_thread(self.avatars.get, avatar_id)).status == "preparing":
            progress(avatar.progress, desc=f"Preparing {avatar_id}: {avatar.stage}")
            await asyncio.sleep(0.25)
        rows = await asyncio.to_thread(self.avatar_rows, teacher)
        if avatar.status == "failed":
            return f"**{avatar_id}** could not be prepared: {avatar.error}", rows
        return f"Avatar **{avatar_id}** is ready: put its id in a tutor's *Avatar id* to use it.", rows

    @friendly
    async def delete_avatar(self, teacher: Teacher | None, avatar_id: str) -> tuple[str, list[list[Any]]]:
        teacher = signed_in(teacher)
        avatar_id = (avatar_id or "").strip()
        check_owns(teacher, (await asyncio.to_thread(self.avatars.get, avatar_id)).owner_id, "That avatar")
        await asyncio.to_thread(self.avatars.delete, avatar_id)
        return "Deleted.", await asyncio.to_thread(self.avatar_rows, teacher)

    def build(self, teacher: gr.State) -> None:
        with gr.Column(visible=False) as self.column, gr.Accordion("Avatars", open=True):
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
        self.filled = [avatar_list]
        avatar_make.click(self.prepare_avatar, [teacher, avatar_new, avatar_file], [avatar_notice, avatar_list])
        avatar_delete.click(self.delete_avatar, [teacher, avatar_gone], [avatar_notice, avatar_list])
