"""FastAPI dependencies as `Annotated` aliases; tests override them through the app.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread pool,
and a thread hop per dependency per request cost more than the request itself.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.conversation.sessions import SessionManager
from app.core.errors import Unauthorized
from app.services import Services
from avatars.service import Avatars
from kb.service import KnowledgeBases
from tutors.accounts import TeacherStore
from tutors.store import TutorStore
from tutors.transcripts import TranscriptStore


async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_sessions(services: ServicesDep) -> SessionManager:
    return services.sessions


async def get_tutors(services: ServicesDep) -> TutorStore:
    return services.tutors


async def get_teachers(services: ServicesDep) -> TeacherStore:
    return services.teachers


async def get_transcripts(services: ServicesDep) -> TranscriptStore:
    return services.transcripts


async def get_kbs(services: ServicesDep) -> KnowledgeBases:
    return services.kbs


SessionsDep = Annotated[SessionManager, Depends(get_sessions)]
TutorsDep = Annotated[TutorStore, Depends(get_tutors)]
TeachersDep = Annotated[TeacherStore, Depends(get_teachers)]
TranscriptsDep = Annotated[TranscriptStore, Depends(get_transcripts)]
KbsDep = Annotated[KnowledgeBases, Depends(get_kbs)]


async def get_avatars(services: ServicesDep) -> Avatars:
    return services.avatars


AvatarsDep = Annotated[Avatars, Depends(get_avatars)]

_bearer = HTTPBearer(auto_error=False, description="MANAGEMENT_API_KEY, when the operator set one")


async def require_api_key(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    key = services.settings.management_api_key
    if key is None:
        return
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), key.get_secret_value().encode()):
        raise Unauthorized("missing or wrong API key: send `Authorization: Bearer <MANAGEMENT_API_KEY>`")


ApiKey = Depends(require_api_key)
