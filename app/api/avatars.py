"""`/v1/avatars`: avatars made from a teacher's video, prepared in the background with
progress (`preparing` → `ready` | `failed` with a reason)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from pydantic import BaseModel, Field, StringConstraints

from app.api.common import Id
from app.api.uploads import read_upload
from app.deps import AvatarsDep, ServicesDep
from avatars.service import Avatar

router = APIRouter(prefix="/v1/avatars", tags=["avatars"])

AvatarId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class AvatarImport(BaseModel):
    avatar_id: AvatarId
    video_path: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    owner_id: Id | None = Field(None, description="the teacher it belongs to; none: shared")


def _public(avatar: Avatar) -> dict[str, Any]:
    return {
        "avatar_id": avatar.avatar_id,
        "status": avatar.status,
        "progress": avatar.progress,
        "stage": avatar.stage,
        "error": avatar.error,
        "source": avatar.source,
        "owner_id": avatar.owner_id,
        **avatar.info,
        "created_at": avatar.created_at,
        "updated_at": avatar.updated_at,
    }


@router.post("", status_code=202)
async def import_avatar(body: AvatarImport, avatars: AvatarsDep) -> dict[str, Any]:
    """From a video already in the import folder (AVATAR_IMPORT_DIR); any other path is refused."""
    avatar = await asyncio.to_thread(avatars.create_from_path, body.avatar_id, body.video_path, body.owner_id)
    avatars.schedule(avatar.avatar_id)
    return _public(avatar)


@router.post("/upload", status_code=202)
async def upload_avatar(
    avatars: AvatarsDep,
    services: ServicesDep,
    avatar_id: Annotated[str, Form()],
    file: Annotated[UploadFile, File()],
    owner_id: Annotated[Id | None, Form(description="the teacher it belongs to; none: shared")] = None,
) -> dict[str, Any]:
    data = await read_upload(file, services.settings.avatar_max_upload_bytes)
    name = file.filename or ""
    avatar = await asyncio.to_thread(avatars.create_from_upload, avatar_id.strip(), name, data, owner_id)
    avatars.schedule(avatar.avatar_id)
    return _public(avatar)


@router.get("")
def list_avatars(avatars: AvatarsDep, owner_id: Annotated[Id | None, Query()] = None) -> dict[str, Any]:
    """Every avatar, or one teacher's (`owner_id`)."""
    listed = [_public(a) for a in avatars.list(owner_id)]
    return {"avatars": listed, "count": len(listed)}


@router.get("/{avatar_id}")
def get_avatar(avatar_id: str, avatars: AvatarsDep) -> dict[str, Any]:
    return _public(avatars.get(avatar_id))


@router.delete("/{avatar_id}", status_code=204)
def delete_avatar(avatar_id: str, avatars: AvatarsDep) -> Response:
    avatars.delete(avatar_id)
    return Response(status_code=204)
