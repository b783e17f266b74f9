"""Tutor records: what a teacher configured, persisted in the embedded database."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from app.core.db import (
    AvatarRow,
    Database,
    KnowledgeBaseRow,
    MessageRow,
    SessionRow,
    TeacherRow,
    TutorRow,
    check_owner,
)
from app.core.errors import Conflict, InvalidInput, NotFound


@dataclass(frozen=True)
class Tutor:
    id: int
    name: str
    subject: str = ""
    persona: str = ""
    greeting: str = ""
    language: str = "en"
    llm_model: str | None = None
    voice: str | None = None
    temperature: float | None = None
    avatar_id: str | None = None
    kb_ids: list[str] = field(default_factory=list)
    owner_id: int | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


EDITABLE = tuple(f.name for f in fields(Tutor) if f.name not in ("id", "created_at", "updated_at"))


def _to_tutor(row: object) -> Tutor:
    return Tutor(**{f.name: getattr(row, f.name) for f in fields(Tutor)})


def _check_material(db: Session, owner_id: int | None, kb_ids: list[str], avatar_id: str | None) -> None:
    """A teacher's tutor uses only material that is the teacher's own or shared (the web
    backend's, with no owner); an admin's may use anyone's, and so may the backend's tutors."""
    check_owner(db, owner_id)
    if owner_id is None or db.get(TeacherRow, owner_id).is_admin:
        return
    foreign = [
        row.id
        for row in db.scalars(select(KnowledgeBaseRow).where(KnowledgeBaseRow.id.in_(kb_ids)))
        if row.owner_id not in (None, owner_id)
    ]
    if foreign:
        raise InvalidInput(f"knowledge base {', '.join(sorted(foreign))} belongs to another teacher")
    avatar = db.get(AvatarRow, avatar_id) if avatar_id else None
    if avatar is not None and avatar.owner_id not in (None, owner_id):
        raise InvalidInput(f"avatar {avatar_id} belongs to another teacher")


class TutorStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, values: dict[str, Any]) -> Tutor:
        with self._db.session() as db:
            _check_material(db, values.get("owner_id"), values.get("kb_ids") or [], values.get("avatar_id"))
            row = TutorRow(**{k: v for k, v in values.items() if k in EDITABLE})
            db.add(row)
            db.flush()
            return _to_tutor(row)

    def get(self, tutor_id: int, connection: Connection | None = None) -> Tutor:
        """Every turn reads its tutor (a teacher's edit applies at once): a Core query, and
        inside the caller's transaction when it has one."""
        query = select(TutorRow.__table__).where(TutorRow.id == tutor_id)
        if connection is not None:
            row = connection.execute(query).first()
        else:
            with self._db.transaction() as db:
                row = db.execute(query).first()
        if row is None:
            raise NotFound(f"tutor {tutor_id} does not exist")
        return _to_tutor(row)

    def list(self, owner_id: int | None = None) -> list[Tutor]:
        """All tutors, or those of one teacher."""
        query = select(TutorRow).order_by(TutorRow.id)
        if owner_id is not None:
            query = query.where(TutorRow.owner_id == owner_id)
        with self._db.session() as db:
            return [_to_tutor(r) for r in db.scalars(query)]

    def update(self, tutor_id: int, changes: dict[str, Any]) -> Tutor:
        with self._db.session() as db:
            row = db.get(TutorRow, tutor_id)
            if row is None:
                raise NotFound(f"tutor {tutor_id} does not exist")
            if changes.keys() & {"owner_id", "kb_ids", "avatar_id"}:
                after = {k: changes.get(k, getattr(row, k)) for k in ("owner_id", "kb_ids", "avatar_id")}
                _check_material(db, after["owner_id"], after["kb_ids"] or [], after["avatar_id"])
            for key, value in changes.items():
                if key in EDITABLE:
                    setattr(row, key, value)
            db.flush()
            return _to_tutor(row)

    def delete(self, tutor_id: int) -> None:
        """Delete a tutor with its ended sessions and transcripts; refuse while students talk."""
        with self._db.session() as db:
            row = db.get(TutorRow, tutor_id)
            if row is None:
                raise NotFound(f"tutor {tutor_id} does not exist")
            live = db.scalar(
                select(func.count())
                .select_from(SessionRow)
                .where(SessionRow.tutor_id == tutor_id, SessionRow.status == "active")
            )
            if live:
                raise Conflict(f"tutor {tutor_id} has {live} active session(s); end them before deleting it")
            session_ids = select(SessionRow.id).where(SessionRow.tutor_id == tutor_id)
            db.query(MessageRow).filter(MessageRow.session_id.in_(session_ids)).delete(synchronize_session=False)
            db.query(SessionRow).filter(SessionRow.tutor_id == tutor_id).delete(synchronize_session=False)
            db.delete(row)
