"""`/v1/kbs`: knowledge bases, their documents (uploaded, ingested in the background with
progress), and search."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Response, UploadFile
from pydantic import BaseModel, Field, StringConstraints

from app.api.common import Id, NotABool
from app.api.uploads import read_upload
from app.deps import KbsDep, ServicesDep
from kb.service import KB_ID_PATTERN, Document, KnowledgeBase

router = APIRouter(prefix="/v1/kbs", tags=["knowledge bases"])


class KbCreate(BaseModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    description: Annotated[str, StringConstraints(max_length=5000)] = ""
    id: Annotated[str, StringConstraints(pattern=KB_ID_PATTERN)] | None = Field(
        None, description="optional: the web backend's own id, e.g. kb-001"
    )
    owner_id: Id | None = Field(None, description="the teacher it belongs to; none: shared")


class SearchQuery(BaseModel):
    query: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    k: Annotated[int, NotABool] = Field(5, ge=1, le=50)


@router.post("", status_code=201)
def create_kb(body: KbCreate, kbs: KbsDep) -> KnowledgeBase:
    return kbs.create(body.name, body.description, body.id, body.owner_id)


@router.get("")
def list_kbs(kbs: KbsDep, owner_id: Annotated[Id | None, Query()] = None) -> list[KnowledgeBase]:
    """Every knowledge base, or one teacher's (`owner_id`)."""
    return kbs.list(owner_id)


@router.get("/{kb_id}")
def get_kb(kb_id: str, kbs: KbsDep) -> KnowledgeBase:
    return kbs.get(kb_id)


@router.delete("/{kb_id}", status_code=204)
def delete_kb(kb_id: str, kbs: KbsDep) -> Response:
    kbs.delete(kb_id)
    return Response(status_code=204)


@router.post("/{kb_id}/documents", status_code=202)
async def upload_document(
    kb_id: str, kbs: KbsDep, services: ServicesDep, file: Annotated[UploadFile, File()]
) -> Document:
    """Store the file and start ingesting it; poll the document for `status` and `progress`."""
    data = await read_upload(file, services.settings.kb_max_upload_bytes)
    document = await asyncio.to_thread(kbs.add_document, kb_id, file.filename, data)
    kbs.schedule(document.id)
    return document


@router.get("/{kb_id}/documents")
def list_documents(kb_id: str, kbs: KbsDep) -> list[Document]:
    return kbs.documents(kb_id)


@router.get("/{kb_id}/documents/{doc_id}")
def get_document(kb_id: str, doc_id: str, kbs: KbsDep) -> Document:
    return kbs.document(kb_id, doc_id)


@router.post("/{kb_id}/documents/{doc_id}/reindex", status_code=202)
async def reindex_document(kb_id: str, doc_id: str, kbs: KbsDep) -> Document:
    document = await asyncio.to_thread(kbs.requeue, kb_id, doc_id)
    kbs.schedule(doc_id)
    return document


@router.delete("/{kb_id}/documents/{doc_id}", status_code=204)
def delete_document(kb_id: str, doc_id: str, kbs: KbsDep) -> Response:
    kbs.delete_document(kb_id, doc_id)
    return Response(status_code=204)


@router.post("/{kb_id}/search")
def search(kb_id: str, body: SearchQuery, kbs: KbsDep) -> dict[str, Any]:
    """Passages that clear the relevance threshold, best first; an empty list means the
    material does not cover the question."""
    kbs.get(kb_id)
    hits = kbs.search([kb_id], body.query, body.k)
    return {"results": [{"text": h.text, "score": h.score, "source": h.source} for h in hits]}


class Answerable(BaseModel):
    """Whether a tutor would answer a question from this knowledge base, with what, and why."""

    answered: bool
    answer: str | None = Field(description="the answer a tutor would give (the material's own words); null: declined")
    reason: str
    evidence: list[dict[str, Any]] = Field(description="the sentences the answer rests on, with their sources")
    passages: list[dict[str, Any]] = Field(description="what the search found, best first")


@router.post("/{kb_id}/answer")
def answer(kb_id: str, body: SearchQuery, kbs: KbsDep) -> Answerable:
    """What a tutor would answer from this material, from which passages, or why it declines:
    the teacher's test of a question."""
    kbs.get(kb_id)
    grounding = kbs.ground([kb_id], body.query, body.k)
    return Answerable(
        answered=grounding.answered,
        answer=grounding.quote or None,
        reason=grounding.reason,
        evidence=grounding.citations(),
        passages=[{"text": p.text, "score": p.score, "source": p.source} for p in grounding.passages],
    )
