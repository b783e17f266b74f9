"""`/v1/teachers`: accounts for the teacher UI, managed by the web backend or an operator."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field, SecretStr, StrictBool

from app.api.common import IdPath
from app.deps import TeachersDep
from tutors.accounts import Teacher

router = APIRouter(prefix="/v1/teachers", tags=["teachers"])


class TeacherCreate(BaseModel):
    username: str = Field(min_length=3, max_length=64)
    password: SecretStr = Field(min_length=10, max_length=200)
    is_admin: StrictBool = False


@router.post("", status_code=201)
def create_teacher(body: TeacherCreate, teachers: TeachersDep) -> Teacher:
    return teachers.create(body.username, body.password.get_secret_value(), is_admin=body.is_admin)


@router.get("")
def list_teachers(teachers: TeachersDep) -> list[Teacher]:
    return teachers.list()


@router.delete("/{teacher_id}", status_code=204)
def delete_teacher(teacher_id: IdPath, teachers: TeachersDep) -> Response:
    """Their tutors stay, without an owner (admins still manage them)."""
    teachers.delete(teacher_id)
    return Response(status_code=204)
