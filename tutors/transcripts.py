"""What teachers read back: each session's transcript and a tutor's usage figures."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from app.core.db import Database, MessageRow, SessionRow

_M = MessageRow.__table__.c
_S = SessionRow.__table__.c


@dataclass(frozen=True)
class SessionSummary:
    session_id: str
    student_id: int | None
    status: str
    created_at: dt.datetime
    last_activity_at: dt.datetime
    turns: int


@dataclass(frozen=True)
class TranscriptMessage:
    role: str
    content: str
    chat_id: str
    created_at: dt.datetime
    meta: dict[str, Any]


@dataclass(frozen=True)
class Usage:
    sessions: int
    active_sessions: int
    students: int
    turns: int
    avg_answer_ms: float | None
    avg_first_token_ms: float | None


class TranscriptStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def sessions(self, tutor_id: int, limit: int = 100) -> list[SessionSummary]:
        turns = (
            select(_M.session_id, func.count().label("turns"))
            .where(_M.role == "user")
            .group_by(_M.session_id)
            .subquery()
        )
        query = (
            select(_S.id, _S.student_id, _S.status, _S.created_at, _S.last_activity_at, func.coalesce(turns.c.turns, 0))
            .select_from(SessionRow.__table__.outerjoin(turns, turns.c.session_id == _S.id))
            .where(_S.tutor_id == tutor_id)
            .order_by(_S.created_at.desc())
            .limit(limit)
        )
        with self._db.transaction() as db:
            return [SessionSummary(*row) for row in db.execute(query)]

    def messages(self, session_id: str) -> list[TranscriptMessage]:
        query = (
            select(_M.role, _M.content, _M.chat_id, _M.created_at, _M.meta)
            .where(_M.session_id == session_id)
            .order_by(_M.id)
        )
        with self._db.transaction() as db:
            return [TranscriptMessage(*row) for row in db.execute(query)]

    def usage(self, tutor_id: int) -> Usage:
        sessions = select(_S.id).where(_S.tutor_id == tutor_id)
        with self._db.transaction() as db:
            total, active, students = db.execute(
                select(
                    func.count(),
                    func.count().filter(_S.status == "active"),
                    func.count(func.distinct(_S.student_id)),
                ).where(_S.tutor_id == tutor_id)
            ).one()
            turns = db.scalar(select(func.count()).where(_M.session_id.in_(sessions), _M.role == "user")) or 0
            answers = (
                db.execute(select(_M.meta).where(_M.session_id.in_(sessions), _M.role == "assistant")).scalars().all()
            )
        totals = [m["total_ms"] for m in answers if m and m.get("total_ms") is not None]
        firsts = [m["first_token_ms"] for m in answers if m and m.get("first_token_ms") is not None]
        return Usage(
            sessions=total,
            active_sessions=active,
            students=students,
            turns=turns,
            avg_answer_ms=round(sum(totals) / len(totals), 1) if totals else None,
            avg_first_token_ms=round(sum(firsts) / len(firsts), 1) if firsts else None,
        )
