"""The Teacher tab's knowledge bases: create one, index files into it with a progress bar,
delete documents, and try a question against it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import gradio as gr

from app.services import Services
from app.ui.common import Teacher, check_owns, friendly, read_limited, signed_in, whose
from kb.passages import describe_source

DOCUMENT_TYPES = [".pdf", ".docx", ".md", ".markdown", ".html", ".htm", ".txt"]


class KnowledgePanel:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.kbs = services.kbs

    def kb_choices(self, teacher: Teacher) -> list[tuple[str, str]]:
        return [(f"{k.name} ({k.id})", k.id) for k in self.kbs.list(whose(teacher))]

    def own(self, teacher: Teacher | None, kb_id: str | None) -> str:
        """The picked knowledge base, if the signed-in teacher may use it."""
        teacher = signed_in(teacher)
        if not kb_id:
            raise gr.Error("Pick a knowledge base first.")
        check_owns(teacher, self.kbs.get(kb_id).owner_id, "That knowledge base")
        return kb_id

    def document_rows(self, kb_id: str | None) -> list[list[Any]]:
        if not kb_id:
            return []
        return [
            [d.filename, d.status, f"{d.progress:.0%}", d.pages or "", d.chunks, d.error or "", d.id]
            for d in self.kbs.documents(kb_id)
        ]

    async def fill(self, teacher: Teacher) -> list[Any]:
        return [gr.update(choices=await asyncio.to_thread(self.kb_choices, teacher), value=None)]

    @friendly
    async def create_kb(self, teacher: Teacher | None, kb_name: str) -> tuple[str, Any]:
        teacher = signed_in(teacher)
        if not kb_name or not kb_name.strip():
            raise gr.Error("A knowledge base needs a name.")
        created = await asyncio.to_thread(self.kbs.create, kb_name.strip(), owner_id=teacher["id"])
        choices = await asyncio.to_thread(self.kb_choices, teacher)
        notice = f"Created knowledge base **{created.name}** (id `{created.id}`)."
        return notice, gr.update(choices=choices, value=created.id)

    @friendly
    async def show_kb(self, teacher: Teacher | None, kb_id: str | None) -> list[list[Any]]:
        if not kb_id:
            return []
        return await asyncio.to_thread(self.document_rows, await asyncio.to_thread(self.own, teacher, kb_id))

    @friendly
    async def upload(
        self,
        teacher: Teacher | None,
        kb_id: str | None,
        path: str | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008  (Gradio injects its tracker through this default)
    ) -> tuple[str, list[list[Any]]]:
        if not kb_id or not path:
            raise gr.Error("Pick a knowledge base and a file first.")
        await asyncio.to_thread(self.own, teacher, kb_id)
        file = Path(path)
        data = await asyncio.to_thread(read_limited, file, self.services.settings.kb_max_upload_bytes)
        document = await asyncio.to_thread(self.kbs.add_document, kb_id, file.name, data)
        task = asyncio.create_task(self.kbs.ingest(document.id))
        while not task.done():
            current = await asyncio.to_thread(self.kbs.document, kb_id, document.id)
            progress(current.progress, desc=f"Indexing {file.name}")
            await asyncio.sleep(0.25)
        done = task.result()
        rows = await asyncio.to_thread(self.document_rows, kb_id)
        if done.status == "failed":
            return f"**{file.name}** could not be indexed: {done.error}", rows
        pages = f"{done.pages} page(s), " if done.pages else ""
        return f"Indexed **{file.name}**: {pages}{done.chunks} passage(s).", rows

    @friendly
    async def delete_document(self, teacher: Teacher | None, kb_id: str | None, doc_id: str) -> tuple[str, Any]:
        if not kb_id or not (doc_id or "").strip():
            raise gr.Error("Pick a knowledge base and paste the document id to delete.")
        await asyncio.to_thread(self.own, teacher, kb_id)
        await asyncio.to_thread(self.kbs.delete_document, kb_id, doc_id.strip())
        return "Deleted.", await asyncio.to_thread(self.document_rows, kb_id)

    @friendly
    async def try_question(self, teacher: Teacher | None, kb_id: str | None, query: str) -> str:
        """What a tutor would answer, from which passages, or why it would decline."""
        if not kb_id or not (query or "").strip():
            raise gr.Error("Pick a knowledge base and type a question.")
        await asyncio.to_thread(self.own, teacher, kb_id)
        grounding = await asyncio.to_thread(self.kbs.ground, [kb_id], query, 5)
        if grounding.answered:
            (cited, *_) = grounding.citations()
            verdict = (
                f"**A tutor would answer:** {grounding.quote}\n\n"
                f"**From:** {describe_source(cited)} — **why:** {grounding.reason}"
            )
        else:
            verdict = f"**A tutor would decline** (“the material does not cover this”): {grounding.reason}."
        if not grounding.passages:
            return verdict
        found = "\n\n".join(
            f"**{p.score:.2f}** — {describe_source(p.source)}\n> {p.text[:300]}" for p in grounding.passages
        )
        return f"{verdict}\n\n**Passages found:**\n\n{found}"

    def build(self, teacher: gr.State) -> None:
        with gr.Column(visible=False) as self.column, gr.Accordion("Knowledge bases", open=True):
            with gr.Row():
                kb_pick = gr.Dropdown(label="Knowledge base", choices=[], elem_id="kb-pick", scale=3)
                kb_name = gr.Textbox(label="New knowledge base", elem_id="kb-name", scale=2)
                kb_create = gr.Button("Create", scale=1, elem_id="kb-create")
            with gr.Row():
                kb_file = gr.File(
                    label="Upload PDF, DOCX, Markdown, HTML or text", file_types=DOCUMENT_TYPES, elem_id="kb-file"
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
        self.filled = [kb_pick]
        kb_create.click(self.create_kb, [teacher, kb_name], [kb_notice, kb_pick])
        kb_pick.change(self.show_kb, [teacher, kb_pick], [kb_docs])
        kb_upload.click(self.upload, [teacher, kb_pick, kb_file], [kb_notice, kb_docs])
        doc_delete.click(self.delete_document, [teacher, kb_pick, doc_id], [kb_notice, kb_docs])
        kb_query.submit(self.try_question, [teacher, kb_pick, kb_query], [kb_results])
