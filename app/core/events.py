"""What one replica tells the others: a session it ended, material that changed.

Every replica shares one database, so the database carries the news too: PostgreSQL's
LISTEN/NOTIFY, no broker of our own to run. A replica acts on its own changes directly and only
hears the others'. One box on SQLite has nobody to tell, so `OneBox` publishes nowhere.

A notification is only a hint to re-read the database: one lost before a replica listens, or
while it reconnects, is made good by `RESYNC`, which tells every handler to drop what it
caches and look again.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

CHANNEL = "virtual_tutor"
SESSION_ENDED = "session_ended"  # {"id"}: the replica holding it closes its socket and call
KB_CHANGED = "kb_changed"  # {"kb_id"}: its chunks or documents changed; keyword indexes are rebuilt
AVATAR_DELETED = "avatar_deleted"  # {"avatar_id"}: frames loaded from it are dropped
RESYNC = "resync"  # {}: news may have been missed (a reconnect); forget every cache

Handler = Callable[[dict[str, Any]], None]


class Events(Protocol):
    def publish(self, kind: str, **payload: Any) -> None: ...

    def subscribe(self, kind: str, handler: Handler) -> None: ...

    def start(self) -> None: ...

    def close(self) -> None: ...

    def problem(self) -> str:
        """Why this replica may be missing the others' news, or "" (readiness)."""
        ...


class OneBox:
    """SQLite: one replica, so there is never anybody else to tell."""

    def publish(self, kind: str, **payload: Any) -> None:
        pass

    def subscribe(self, kind: str, handler: Handler) -> None:
        pass

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def problem(self) -> str:
        return ""


class PostgresEvents:
    """NOTIFY through the pool's connections; LISTEN on one connection of its own, in a thread
    (handlers are quick and thread-safe: they drop a cache entry or hand work to the loop)."""

    def __init__(self, engine: Engine, replica: str, *, retry_seconds: float = 1.0) -> None:
        self._engine = engine
        self.replica = replica
        self._retry = retry_seconds
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()  # set while LISTEN holds (readiness, tests)

    def publish(self, kind: str, **payload: Any) -> None:
        """After the change is committed; best effort, because the change itself is done: a
        lost notification is what `RESYNC` and the idle sweep make good."""
        message = json.dumps({"kind": kind, "from": self.replica, **payload})
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    text("SELECT pg_notify(:channel, :message)"), {"channel": CHANNEL, "message": message}
                )
        except Exception as exc:  # the database's trouble shows in /health/ready; not this caller's
            log.warning("replica events: could not announce %s (%s)", kind, type(exc).__name__)

    def subscribe(self, kind: str, handler: Handler) -> None:
        self._handlers[kind].append(handler)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._listen, name="replica-events", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def problem(self) -> str:
        return "" if self.listening.is_set() else "replica events: not listening to the database"

    def _listen(self) -> None:
        import psycopg

        # The pool's own connection arguments: the URL as SQLAlchemy parsed it, options and all.
        args, kwargs = self._engine.dialect.create_connect_args(self._engine.url)
        kwargs.setdefault("connect_timeout", 5)
        while not self._stop.is_set():
            try:
                with psycopg.connect(*args, **kwargs, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    # What changed before we listened (start-up, a reconnect) is read again.
                    self._dispatch({"kind": RESYNC})
                    while not self._stop.is_set():
                        for note in connection.notifies(timeout=0.5):
                            self._dispatch(json.loads(note.payload))
            except Exception as exc:  # the database went away: say so, wait, listen again
                self.listening.clear()
                log.warning("replica events: lost the database (%s); listening again", type(exc).__name__)
                self._stop.wait(self._retry)
        self.listening.clear()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("from") == self.replica:
            return
        for handler in self._handlers.get(message.get("kind", ""), []):
            try:
                handler(message)
            except Exception:  # one handler's bug must not deafen the replica
                log.exception("replica events: the %s handler failed", message.get("kind"))


def replica_events(engine: Engine, shared: bool, replica: str) -> Events:
    return PostgresEvents(engine, replica) if shared else OneBox()
