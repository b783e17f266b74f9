"""`/v1/sessions`: the web backend opens, inspects and ends conversation sessions."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from app.api.common import Id
from app.conversation.sessions import SessionInfo
from app.deps import ServicesDep, SessionsDep, TranscriptsDep
from tutors.transcripts import TranscriptMessage

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


class SessionCreate(BaseModel):
    tutor_id: Id
    student_id: Id | None = None
    kb_id: str | None = Field(None, max_length=200)


class SessionCreated(BaseModel):
    session_id: str
    engine_url: str
    engine_token: str
    status: str


class SessionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    session_id: str = Field(validation_alias=AliasChoices("session_id", "id"))
    tutor_id: int
    student_id: int | None
    kb_id: str | None
    status: str
    created_at: dt.datetime
    last_activity_at: dt.datetime
    replica: str | None = None  # the box holding its connections (several replicas)
    ended_at: dt.datetime | None
    end_reason: str | None

    @classmethod
    def of(cls, info: SessionInfo) -> SessionOut:
        return cls.model_validate(info)


class SessionList(BaseModel):
    sessions: list[SessionOut]
    count: int


def _ws_base(request: Request, services: ServicesDep) -> str:
    # Without WEBSOCKET_URL, answer with the host the caller reached us by: right behind
    # port mappings, where the listening address (often 0.0.0.0) is not.
    if services.settings.websocket_url or "host" not in request.headers:
        return services.settings.public_ws_base
    scheme = "wss" if request.url.scheme == "https" else "ws"
    return f"{scheme}://{request.headers['host']}"


@router.post("", status_code=201, response_model=SessionCreated)
def create_session(
    body: SessionCreate, sessions: SessionsDep, services: ServicesDep, request: Request
) -> SessionCreated:
    info, token = sessions.create(body.tutor_id, body.student_id, body.kb_id)
    return SessionCreated(
        session_id=info.id,
        engine_url=f"{_ws_base(request, services)}/ws/{info.id}",
        engine_token=token,
        status=info.status,
    )


@router.get("", response_model=SessionList)
def list_sessions(sessions: SessionsDep) -> SessionList:
    active = [SessionOut.of(s) for s in sessions.list_active()]
    return SessionList(sessions=active, count=len(active))


@router.get("/{session_id}", response_model=SessionOut)
def get_session(session_id: str, sessions: SessionsDep) -> SessionOut:
    return SessionOut.of(sessions.get(session_id))


@router.delete("/{session_id}", response_model=SessionOut)
def delete_session(session_id: str, sessions: SessionsDep) -> SessionOut:
    return SessionOut.of(sessions.end(session_id, "deleted"))


@router.get("/{session_id}/messages")
def session_messages(session_id: str, sessions: SessionsDep, transcripts: TranscriptsDep) -> list[TranscriptMessage]:
    """The transcript: every question and answer of the session, oldest first."""
    sessions.get(session_id)
    return transcripts.messages(session_id)
