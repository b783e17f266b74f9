"""Conversation sessions: creation under `MAX_SESSIONS`, tokens, idle expiry, ending.

A session lives in the database (so it survives a restart) and may have live connections
in memory (WebSockets now, WebRTC peers later). Whoever holds live resources subscribes to
`on_end` and is told when a session ends, whatever ended it: a DELETE, idle expiry, or a
deleted tutor.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select, update

from app.db import Database, SessionRow, TutorRow, utcnow
from app.errors import NotFound, SessionEnded, SessionLimitReached, Unauthorized

ACTIVE = "active"
ENDED = "ended"
EXPIRED = "expired"


@dataclass(frozen=True)
class SessionInfo:
    id: str
    tutor_id: int
    student_id: int | None
    kb_id: str | None
    status: str
    created_at: dt.datetime
    last_activity_at: dt.datetime
    ended_at: dt.datetime | None
    end_reason: str | None

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


def _info(row: SessionRow) -> SessionInfo:
    return SessionInfo(
        id=row.id,
        tutor_id=row.tutor_id,
        student_id=row.student_id,
        kb_id=row.kb_id,
        status=row.status,
        created_at=row.created_at,
        last_activity_at=row.last_activity_at,
        ended_at=row.ended_at,
        end_reason=row.end_reason,
    )


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


EndListener = Callable[[SessionInfo], None]


class SessionManager:
    def __init__(
        self,
        db: Database,
        *,
        max_sessions: int,
        timeout_seconds: float,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._db = db
        self.max_sessions = max_sessions
        self.timeout = dt.timedelta(seconds=timeout_seconds)
        self._clock = clock
        # Counting and inserting must be one step, or two racing requests both get the last slot.
        self._create_lock = threading.Lock()
        self._listeners: list[EndListener] = []
        # Activity is written at most this often per session: a chatty student costs no write
        # per message, and expiry stays accurate to a small fraction of the timeout.
        self._touch_interval = min(dt.timedelta(seconds=5), self.timeout / 10)
        self._last_touch: dict[str, dt.datetime] = {}

    def on_end(self, listener: EndListener) -> None:
        self._listeners.append(listener)

    def create(self, tutor_id: int, student_id: int | None, kb_id: str | None) -> tuple[SessionInfo, str]:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        self.expire_idle()
        with self._create_lock, self._db.session() as db:
            if db.get(TutorRow, tutor_id) is None:
                raise NotFound(f"tutor {tutor_id} does not exist")
            active = db.scalar(select(func.count()).select_from(SessionRow).where(SessionRow.status == ACTIVE))
            if active >= self.max_sessions:
                raise SessionLimitReached(
                    f"all {self.max_sessions} session slots are in use; end a session or try again later"
                )
            row = SessionRow(
                id=str(uuid.uuid4()),
                tutor_id=tutor_id,
                student_id=student_id,
                kb_id=kb_id,
                token_hash=_hash_token(token),
                status=ACTIVE,
                created_at=now,
                last_activity_at=now,
            )
            db.add(row)
            db.flush()
            return _info(row), token

    def get(self, session_id: str) -> SessionInfo:
        info = self._fetch(session_id)
        if info.active and self._is_idle(info):
            self._end(session_id, EXPIRED, "idle_timeout")
            return self._fetch(session_id)
        return info

    def _fetch(self, session_id: str) -> SessionInfo:
        with self._db.session() as db:
            row = db.get(SessionRow, session_id)
            if row is None:
                raise NotFound(f"session {session_id} does not exist")
            return _info(row)

    def list_active(self) -> list[SessionInfo]:
        self.expire_idle()
        with self._db.session() as db:
            rows = db.scalars(select(SessionRow).where(SessionRow.status == ACTIVE).order_by(SessionRow.created_at))
            return [_info(r) for r in rows]

    def count_active(self) -> int:
        with self._db.session() as db:
            return db.scalar(select(func.count()).select_from(SessionRow).where(SessionRow.status == ACTIVE)) or 0

    def authenticate(self, session_id: str, token: str) -> SessionInfo:
        """The session if `token` is its live token; the same refusal for every failure."""
        with self._db.session() as db:
            row = db.get(SessionRow, session_id)
            stored = row.token_hash if row is not None else _hash_token(secrets.token_hex(8))
            valid = hmac.compare_digest(stored, _hash_token(token or ""))
            if row is None or not valid:
                raise Unauthorized("invalid or expired token")
            info = _info(row)
        if not info.active or self._is_idle(info):
            if info.active:
                self._end(session_id, EXPIRED, "idle_timeout")
            raise Unauthorized("invalid or expired token")
        return info

    def authenticate_user(self, student_id: int, token: str) -> list[SessionInfo]:
        """For a `user_<id>` socket: the token must belong to one of that student's live sessions.

        Returns all of the student's live sessions; the socket may carry any of them.
        """
        digest = _hash_token(token or "")
        sessions = [s for s in self.list_active() if s.student_id == student_id]
        with self._db.session() as db:
            hashes = {
                r.id: r.token_hash
                for r in db.scalars(select(SessionRow).where(SessionRow.id.in_([s.id for s in sessions])))
            }
        # Compare against every candidate so timing does not reveal which one matched.
        matched = [hmac.compare_digest(hashes.get(s.id, ""), digest) for s in sessions]
        if not any(matched):
            raise Unauthorized("invalid or expired token")
        return sessions

    def require_active(self, session_id: str) -> SessionInfo:
        info = self.get(session_id)
        if not info.active:
            raise SessionEnded(f"session {session_id} has ended ({info.end_reason or info.status})")
        return info

    def touch_due(self, session_id: str) -> bool:
        """Whether `touch` would write; cheap, so callers skip a thread hop when it would not."""
        last = self._last_touch.get(session_id)
        return last is None or self._clock() - last >= self._touch_interval

    def touch(self, session_id: str) -> None:
        if not self.touch_due(session_id):
            return
        now = self._clock()
        self._last_touch[session_id] = now
        with self._db.session() as db:
            db.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id, SessionRow.status == ACTIVE)
                .values(last_activity_at=now)
            )

    def end(self, session_id: str, reason: str = "deleted") -> SessionInfo:
        info = self.get(session_id)
        if info.active:
            self._end(session_id, ENDED, reason)
            return self._fetch(session_id)
        return info

    def expire_idle(self) -> list[str]:
        cutoff = self._clock() - self.timeout
        with self._db.session() as db:
            ids = list(
                db.scalars(
                    select(SessionRow.id).where(
                        SessionRow.status == ACTIVE, SessionRow.last_activity_at < cutoff
                    )
                )
            )
        return [sid for sid in ids if self._end(sid, EXPIRED, "idle_timeout")]

    def _is_idle(self, info: SessionInfo) -> bool:
        last = max(info.last_activity_at, self._last_touch.get(info.id, info.last_activity_at))
        return self._clock() - last > self.timeout

    def _end(self, session_id: str, status: str, reason: str) -> SessionInfo | None:
        """Mark the session ended once; only the caller that flips it notifies listeners."""
        now = self._clock()
        with self._db.session() as db:
            flipped = db.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id, SessionRow.status == ACTIVE)
                .values(status=status, end_reason=reason, ended_at=now)
            ).rowcount
            info = _info(db.get(SessionRow, session_id)) if flipped else None
        self._last_touch.pop(session_id, None)
        if info is not None:
            for listener in self._listeners:
                listener(info)
        return info
