"""Conversation sessions: creation under `MAX_SESSIONS`, tokens, idle expiry, ending.

The database is the durable record (a session survives a restart) and is shared by every
replica. Each replica holds the live connections of the sessions it created (`replica` in
their row) and indexes those in memory, because every request and message asks about them;
`MAX_SESSIONS` counts them, per box. Listing and ending reach every replica's sessions: a
session ended here but held elsewhere is announced (`SESSION_ENDED`) so its holder lets go.
Whoever holds live resources (sockets, WebRTC calls) subscribes to `on_end` and is told, on
the event loop, when a session ends, whatever ended it: a DELETE on any replica or idle expiry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import insert, select, update

from app.core.db import Database, SessionRow, TutorRow, claimable, utcnow
from app.core.errors import Draining, NotFound, SessionEnded, SessionLimitReached, Unauthorized
from app.core.events import RESYNC, SESSION_ENDED, Events, OneBox

log = logging.getLogger(__name__)

ACTIVE = "active"
ENDED = "ended"
EXPIRED = "expired"

_COLUMNS = SessionRow.__table__.c


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
    replica: str | None = None  # the box that holds its connections

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


@dataclass
class _Live:
    info: SessionInfo
    token_hash: str
    last_activity: dt.datetime
    last_written: dt.datetime


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


_INFO_FIELDS = [f.name for f in dataclasses.fields(SessionInfo)]


def _info(row: object) -> SessionInfo:
    return SessionInfo(**{name: getattr(row, name) for name in _INFO_FIELDS})


# Told on the server's event loop, whichever thread ended the session (a sync route runs in
# a worker thread, the idle sweep in another).
EndListener = Callable[[SessionInfo], Awaitable[None]]


class SessionManager:
    def __init__(
        self,
        db: Database,
        *,
        max_sessions: int,
        timeout_seconds: float,
        replica: str = "",
        events: Events | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._db = db
        self.replica = replica
        self._events = events or OneBox()
        self._events.subscribe(SESSION_ENDED, lambda message: self._let_go(message["id"]))
        self._events.subscribe(RESYNC, lambda _message: self._resync())
        self.max_sessions = max_sessions
        self.draining = False  # SIGTERM: no new sessions (app.server.drain)
        self.timeout = dt.timedelta(seconds=timeout_seconds)
        self._clock = clock
        # Guards the live index: sync routes run in a thread pool, and counting plus inserting
        # must be one step or two racing requests both take the last slot.
        self._lock = threading.Lock()
        self._listeners: list[EndListener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # Activity is written at most this often per session: a chatty student costs no write
        # per message, and a restart loses at most this much of the idle clock.
        self._write_interval = min(dt.timedelta(seconds=5), self.timeout / 10)
        self._live: dict[str, _Live] = {}
        self._load()

    def _load(self) -> None:
        """This replica's sessions, after a restart: their students reconnect to it, and the
        ones it claims (`claimable`: one box holds every session, whatever its old name)."""
        unclaimed = claimable(self._db, _COLUMNS.replica, self.replica)
        with self._db.transaction() as db:
            db.execute(
                update(SessionRow.__table__).where(_COLUMNS.status == ACTIVE, unclaimed).values(replica=self.replica)
            )
            rows = db.execute(
                select(SessionRow.__table__).where(_COLUMNS.status == ACTIVE, _COLUMNS.replica == self.replica)
            ).all()
        for row in rows:
            token_hash = row.token_hash
            info = _info(row)
            self._live[info.id] = _Live(info, token_hash, info.last_activity_at, info.last_activity_at)

    def on_end(self, listener: EndListener) -> None:
        self._listeners.append(listener)

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Where the listeners run; without a running server there is nobody to tell."""
        self._loop = loop

    # -- create and read -----------------------------------------------------------------
    def create(self, tutor_id: int, student_id: int | None, kb_id: str | None) -> tuple[SessionInfo, str]:
        if self.draining:
            raise Draining("this server is stopping: create the session on another one")
        self.expire_idle()
        token = secrets.token_urlsafe(32)
        now = self._clock()
        info = SessionInfo(str(uuid.uuid4()), tutor_id, student_id, kb_id, ACTIVE, now, now, None, None, self.replica)
        with self._lock:
            if len(self._live) >= self.max_sessions:
                raise SessionLimitReached(
                    f"all {self.max_sessions} session slots are in use; end a session or try again later"
                )
            with self._db.transaction() as db:
                if db.execute(select(TutorRow.id).where(TutorRow.id == tutor_id)).first() is None:
                    raise NotFound(f"tutor {tutor_id} does not exist")
                token_hash = _hash_token(token)
                db.execute(insert(SessionRow.__table__).values(token_hash=token_hash, **dataclasses.asdict(info)))
            self._live[info.id] = _Live(info, token_hash, now, now)
        return info, token

    def get(self, session_id: str) -> SessionInfo:
        live = self._live_or_expire(session_id)
        if live is not None:
            return dataclasses.replace(live.info, last_activity_at=live.last_activity)
        with self._db.transaction() as db:
            row = db.execute(select(SessionRow.__table__).where(_COLUMNS.id == session_id)).first()
        if row is None:
            raise NotFound(f"session {session_id} does not exist")
        return _info(row)

    def list_active(self) -> list[SessionInfo]:
        """The whole service's active sessions, each with the replica that holds it."""
        self.expire_idle()
        with self._db.transaction() as db:
            rows = db.execute(
                select(SessionRow.__table__).where(_COLUMNS.status == ACTIVE).order_by(_COLUMNS.created_at)
            ).all()
        lives = dict(self._live)
        # Ours carry the activity not yet written (at most `_write_interval` of it).
        return [
            dataclasses.replace(lives[row.id].info, last_activity_at=lives[row.id].last_activity)
            if row.id in lives
            else _info(row)
            for row in rows
        ]

    def count_active(self) -> int:
        """This box's sessions: what `MAX_SESSIONS` limits."""
        return len(self._live)

    def require_active(self, session_id: str) -> SessionInfo:
        info = self.get(session_id)
        if not info.active:
            raise SessionEnded(f"session {session_id} has ended ({info.end_reason or info.status})")
        return info

    # -- tokens --------------------------------------------------------------------------
    def authenticate(self, session_id: str, token: str) -> SessionInfo:
        """The session if `token` is its live token; the same refusal for every failure."""
        live = self._live_or_expire(session_id)
        # Hash and compare even for an unknown id, so timing does not tell ids apart.
        stored = live.token_hash if live is not None else _hash_token(secrets.token_hex(8))
        if not hmac.compare_digest(stored, _hash_token(token or "")) or live is None:
            if live is None and self._db.shared:
                self._explain_elsewhere(session_id, token)
            raise Unauthorized("invalid or expired token")
        return live.info

    def _explain_elsewhere(self, session_id: str, token: str) -> None:
        """A student who reached the wrong box is refused like any other, but the log says
        why, for the operator whose balancer ignores `engine_url`."""
        with self._db.transaction() as db:
            row = db.execute(
                select(_COLUMNS.replica, _COLUMNS.token_hash).where(
                    _COLUMNS.id == session_id, _COLUMNS.status == ACTIVE
                )
            ).first()
        if row is not None and hmac.compare_digest(row.token_hash, _hash_token(token or "")):
            log.info("session %s is held by replica %s: connect to its engine_url", session_id, row.replica)

    def authenticate_user(self, student_id: int, token: str) -> list[SessionInfo]:
        """For a `user_<id>` socket: the token must belong to one of that student's live sessions.

        Returns all of the student's live sessions; the socket may carry any of them.
        """
        digest = _hash_token(token or "")
        self.expire_idle()
        # This box's sessions only: a socket carries the sessions whose replica it reached.
        lives = sorted(
            (live for live in list(self._live.values()) if live.info.student_id == student_id),
            key=lambda live: live.info.created_at,
        )
        # Compare against every candidate so timing does not reveal which one matched.
        matched = [hmac.compare_digest(live.token_hash, digest) for live in lives]
        if not any(matched):
            raise Unauthorized("invalid or expired token")
        return [dataclasses.replace(live.info, last_activity_at=live.last_activity) for live in lives]

    # -- activity and ending -------------------------------------------------------------
    def touch_due(self, session_id: str) -> bool:
        """Whether `touch` would write; cheap, so callers skip a thread hop when it would not."""
        live = self._live.get(session_id)
        return live is not None and self._clock() - live.last_written >= self._write_interval

    def touch(self, session_id: str) -> None:
        live = self._live.get(session_id)
        if live is None:
            return
        now = self._clock()
        live.last_activity = now
        if now - live.last_written < self._write_interval:
            return
        live.last_written = now
        with self._db.transaction() as db:
            db.execute(
                update(SessionRow.__table__)
                .where(_COLUMNS.id == session_id, _COLUMNS.status == ACTIVE)
                .values(last_activity_at=now)
            )

    def end(self, session_id: str, reason: str = "deleted") -> SessionInfo:
        ended = self._end(session_id, ENDED, reason)
        if ended is None and self._db.shared:
            self._end_elsewhere(session_id, ENDED, reason)
        return ended or self.get(session_id)

    def expire_idle(self) -> list[str]:
        cutoff = self._clock() - self.timeout
        idle = [sid for sid, live in list(self._live.items()) if live.last_activity < cutoff]
        return [sid for sid in idle if self._end(sid, EXPIRED, "idle_timeout")]

    def expire_abandoned(self) -> list[str]:
        """Other replicas' sessions idle past the timeout: a box that died holds its sessions
        forever. For the periodic sweep, not every request: it is a query across the service.
        A row may lag its holder's clock by one write interval, so that much more is allowed."""
        if not self._db.shared:
            return []
        idle_before = self._clock() - self.timeout - self._write_interval
        return self._end_elsewhere(None, EXPIRED, "idle_timeout", idle_before=idle_before)

    def _end_elsewhere(
        self, session_id: str | None, status: str, reason: str, idle_before: dt.datetime | None = None
    ) -> list[str]:
        """End sessions this replica does not hold (one named, or other replicas' idle ones) in
        the database, and tell their holders to let go."""
        query = update(SessionRow.__table__).where(_COLUMNS.status == ACTIVE)
        if session_id is not None:
            query = query.where(_COLUMNS.id == session_id)
        else:
            query = query.where(_COLUMNS.replica != self.replica)
        if idle_before is not None:
            query = query.where(_COLUMNS.last_activity_at < idle_before)
        now = self._clock()
        with self._db.transaction() as db:
            ended = (
                db.execute(query.values(status=status, end_reason=reason, ended_at=now).returning(_COLUMNS.id))
                .scalars()
                .all()
            )
        for sid in ended:
            self._events.publish(SESSION_ENDED, id=sid)
        return list(ended)

    def _let_go(self, session_id: str) -> None:
        """Another replica ended one of ours in the database: close what we hold of it."""
        with self._db.transaction() as db:
            row = db.execute(select(SessionRow.__table__).where(_COLUMNS.id == session_id)).first()
        if row is not None and row.status != ACTIVE:  # else a stale hint: the database says it goes on
            self._release(row)

    def _resync(self) -> None:
        """News may have been missed: let go of ours the database no longer calls active."""
        held = list(self._live)  # before the query: a session made meanwhile is not in doubt
        with self._db.transaction() as db:
            ended = db.execute(
                select(SessionRow.__table__).where(_COLUMNS.id.in_(held), _COLUMNS.status != ACTIVE)
            ).all()
        for row in ended:
            self._release(row)

    def _release(self, row: object) -> None:
        """Drop an ended session (its row) from this box's index and tell the listeners."""
        with self._lock:
            live = self._live.pop(row.id, None)  # type: ignore[attr-defined]
        if live is not None:
            self._tell(_info(row))

    def _live_or_expire(self, session_id: str) -> _Live | None:
        live = self._live.get(session_id)
        if live is not None and self._clock() - live.last_activity > self.timeout:
            self._end(session_id, EXPIRED, "idle_timeout")
            return None
        return live

    def _end(self, session_id: str, status: str, reason: str) -> SessionInfo | None:
        """End a live session once; only the caller that ends it notifies the listeners."""
        now = self._clock()
        with self._lock:
            live = self._live.pop(session_id, None)
        if live is None:
            return None
        info = dataclasses.replace(
            live.info, status=status, end_reason=reason, ended_at=now, last_activity_at=live.last_activity
        )
        with self._db.transaction() as db:
            db.execute(
                update(SessionRow.__table__)
                .where(_COLUMNS.id == session_id)
                .values(status=status, end_reason=reason, ended_at=now, last_activity_at=live.last_activity)
            )
        self._tell(info)
        return info

    def _tell(self, info: SessionInfo) -> None:
        if self._loop is not None and not self._loop.is_closed():
            for listener in self._listeners:
                asyncio.run_coroutine_threadsafe(listener(info), self._loop)
