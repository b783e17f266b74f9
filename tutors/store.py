"""Tutor records: what a teacher configured, persisted in the embedded database."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from app.core.db import Database, MessageRow, SessionRow, TeacherRow, TutorRow
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


def _check_owner(db: Session, owner_id: int | None) -> None:
    if owner_id is not None and db.get(TeacherRow, owner_id) is None:
        raise InvalidInput(f"teacher {owner_id} does not exist")


class TutorStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, values: dict[str, Any]) -> Tutor:
        with self._db.session() as db:
            _check_owner(db, values.get("owner_id"))
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
            if "owner_id" in changes:
                _check_owner(db, changes["owner_id"])
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
