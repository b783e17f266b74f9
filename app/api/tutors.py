"""`/v1/tutors`: create, read, update and delete the tutors teachers build."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field, StringConstraints, model_validator

from app.api.common import Id, IdPath, NotABool
from app.deps import ServicesDep, TranscriptsDep, TutorsDep
from tutors.store import Tutor
from tutors.transcripts import SessionSummary, Usage

router = APIRouter(prefix="/v1/tutors", tags=["tutors"])

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Short = Annotated[str, StringConstraints(max_length=200)]
REQUIRED_FIELDS = ("name", "subject", "persona", "greeting", "language", "kb_ids")
Language = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")]


class TutorFields(BaseModel):
    subject: Short = ""
    persona: Annotated[str, StringConstraints(max_length=20_000)] = ""
    greeting: Annotated[str, StringConstraints(max_length=2_000)] = ""
    language: Language = "en"
    llm_model: Short | None = None
    voice: Short | None = None
    temperature: Annotated[float, NotABool] | None = Field(None, ge=0, le=2)
    avatar_id: Short | None = None
    kb_ids: list[Short] = Field(default_factory=list, max_length=50)
    owner_id: Id | None = None


class TutorCreate(TutorFields):
    name: Name


class TutorUpdate(BaseModel):
    name: Name | None = None
    subject: Short | None = None
    persona: Annotated[str, StringConstraints(max_length=20_000)] | None = None
    greeting: Annotated[str, StringConstraints(max_length=2_000)] | None = None
    language: Language | None = None
    llm_model: Short | None = None
    voice: Short | None = None
    temperature: Annotated[float, NotABool] | None = Field(None, ge=0, le=2)
    avatar_id: Short | None = None
    kb_ids: list[Short] | None = Field(None, max_length=50)
    owner_id: Id | None = None

    @model_validator(mode="after")
    def _no_null_for_required(self) -> TutorUpdate:
        # null clears an optional setting (voice, model, ...); these have no "unset" state.
        nulled = [f for f in REQUIRED_FIELDS if f in self.model_fields_set and getattr(self, f) is None]
        if nulled:
            raise ValueError(f"{', '.join(nulled)} cannot be null")
        return self


class TutorOut(TutorFields):
    id: int
    name: str
    created_at: dt.datetime | None
    updated_at: dt.datetime | None

    @classmethod
    def of(cls, tutor: Tutor) -> TutorOut:
        return cls(**asdict(tutor))


@router.post("", status_code=201, response_model=TutorOut)
def create_tutor(body: TutorCreate, tutors: TutorsDep) -> TutorOut:
    return TutorOut.of(tutors.create(body.model_dump()))


@router.get("", response_model=list[TutorOut])
def list_tutors(tutors: TutorsDep) -> list[TutorOut]:
    return [TutorOut.of(t) for t in tutors.list()]


@router.get("/{tutor_id}", response_model=TutorOut)
def get_tutor(tutor_id: IdPath, tutors: TutorsDep) -> TutorOut:
    return TutorOut.of(tutors.get(tutor_id))


@router.patch("/{tutor_id}", response_model=TutorOut)
def update_tutor(tutor_id: IdPath, body: TutorUpdate, tutors: TutorsDep, services: ServicesDep) -> TutorOut:
    # Only fields the client sent change; an explicit null clears an optional field.
    updated = tutors.update(tutor_id, body.model_dump(exclude_unset=True))
    services.conversation.prepare_tutor_soon(tutor_id)  # its new prompt, before the next question
    return TutorOut.of(updated)


@router.delete("/{tutor_id}", status_code=204)
def delete_tutor(tutor_id: IdPath, tutors: TutorsDep) -> Response:
    tutors.delete(tutor_id)
    return Response(status_code=204)


@router.get("/{tutor_id}/sessions")
def tutor_sessions(
    tutor_id: IdPath, tutors: TutorsDep, transcripts: TranscriptsDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[SessionSummary]:
    """The tutor's sessions, newest first, with how many questions each had."""
    tutors.get(tutor_id)
    return transcripts.sessions(tutor_id, limit)


@router.get("/{tutor_id}/usage")
def tutor_usage(tutor_id: IdPath, tutors: TutorsDep, transcripts: TranscriptsDep) -> Usage:
    tutors.get(tutor_id)
    return transcripts.usage(tutor_id)
