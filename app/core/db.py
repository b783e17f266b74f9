"""The database: SQLAlchemy 2 models, engine set-up and migrations on start.

SQLite in WAL mode by default (`DATA_DIR/tutor.db`, one box); `DATABASE_URL` names a PostgreSQL
that several replicas share. The schema is owned by the Alembic migrations in
`app/core/migrations`; `Database.migrate()` brings any older database up to date, so an upgrade
never asks an operator to delete data, and replicas starting together migrate it once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from app.core.errors import InvalidInput

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """SQLite forgets time zones; store naive UTC and hand back aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    pass


class TeacherRow(Base):
    __tablename__ = "teachers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class TutorRow(Base):
    __tablename__ = "tutors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The teacher who manages it in the UI; tutors made through the REST API may have none.
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("teachers.id", ondelete="SET NULL"), nullable=True)
    name: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(200), default="")
    persona: Mapped[str] = mapped_column(Text, default="")
    greeting: Mapped[str] = mapped_column(Text, default="")
    language: Mapped[str] = mapped_column(String(16), default="en")
    llm_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    voice: Mapped[str | None] = mapped_column(String(200), nullable=True)
    temperature: Mapped[float | None] = mapped_column(Float, nullable=True)
    avatar_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    kb_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SessionRow(Base):
    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_status", "status"),
        Index("ix_sessions_student", "student_id"),
        Index("ix_sessions_replica_status", "replica", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tutor_id: Mapped[int] = mapped_column(ForeignKey("tutors.id"))
    # The replica that holds its live connections (REPLICA_NAME); None: made before replicas.
    replica: Mapped[str | None] = mapped_column(String(200), nullable=True)
    student_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kb_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Only a hash is stored: a copied database file does not hand out live tokens.
    token_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="active")
    end_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_activity_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_chat", "session_id", "chat_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"))
    # The web backend's chat id (the WebSocket message's `session_id`): histories are per chat.
    chat_id: Mapped[str] = mapped_column(String(64), default="")
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class KnowledgeBaseRow(Base):
    __tablename__ = "knowledge_bases"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # The teacher whose material it is (None: the web backend's, shared).
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("teachers.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class DocumentRow(Base):
    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_kb_sha", "kb_id", "sha256"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id"))
    filename: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(16))
    # The replica that took the upload: its file is in that box's DATA_DIR, so it ingests it.
    replica: Mapped[str | None] = mapped_column(String(200), nullable=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    # queued -> ingesting -> ready | failed (with `error`); `progress` runs 0..1.
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    pages: Mapped[int | None] = mapped_column(Integer, nullable=True)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AvatarRow(Base):
    __tablename__ = "avatars"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(300))  # the uploaded file's name or the imported path
    # preparing -> ready | failed (with `error`); `progress` runs 0..1.
    status: Mapped[str] = mapped_column(String(16), default="preparing")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str] = mapped_column(String(64), default="queued")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What preparation found: frame count, fps, size, face box, engines' data (see avatars/).
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    replica: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the one preparing it
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("teachers.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ChunkRow(Base):
    __tablename__ = "chunks"
    __table_args__ = (Index("ix_chunks_kb", "kb_id"), Index("ix_chunks_doc", "doc_id"))

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    doc_id: Mapped[str] = mapped_column(ForeignKey("documents.id"))
    kb_id: Mapped[str] = mapped_column(String(64))
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    page: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heading: Mapped[str | None] = mapped_column(String(300), nullable=True)


# Any fixed number: the PostgreSQL advisory lock replicas take to migrate one at a time.
_MIGRATION_LOCK = 0x7475746F72  # "tutor"


@dataclass(frozen=True)
class Pool:
    """Connections per replica (PostgreSQL): sized so replicas x (size + overflow) stays under
    the server's max_connections."""

    size: int = 5
    overflow: int = 10
    timeout: float = 10


class Database:
    """Owns the engine and hands out short-lived ORM sessions (one per unit of work)."""

    def __init__(self, url: str, pool: Pool = Pool()) -> None:
        self.url = url
        sqlite = url.startswith("sqlite")
        # Replicas share PostgreSQL only (advisory locks, LISTEN/NOTIFY); any other database
        # is one box's, like SQLite.
        self.shared = url.startswith("postgresql")
        options: dict[str, Any] = {}
        if sqlite:
            # Sync routes run in FastAPI's thread pool, so connections cross threads.
            options["connect_args"] = {"check_same_thread": False, "timeout": 30}
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        else:
            # pre_ping: a database restart or a balancer's idle cut costs a reconnect, not a 500.
            options.update(
                pool_size=pool.size, max_overflow=pool.overflow, pool_timeout=pool.timeout, pool_pre_ping=True
            )
        self.engine = create_engine(url, **options)
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as db, db.begin():
            yield db

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in a transaction: for hot paths that need no ORM objects."""
        with self.engine.begin() as connection:
            yield connection

    def reachable(self) -> str:
        """Why a query cannot get through, or "" when it can (a load balancer's readiness)."""
        try:
            with self.engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
        except Exception as exc:  # any driver's error: the reason is what matters here
            return f"database unreachable: {type(exc).__name__}"
        return ""

    def migrate(self) -> None:
        """Up to the newest schema. On PostgreSQL under an advisory lock held for the whole
        upgrade: replicas starting together wait for the first, then find nothing to do."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        if not self.shared:
            config.attributes["connection_url"] = self.url
            command.upgrade(config, "head")
            return
        # One transaction holds the lock and the whole upgrade (Alembic joins a transaction it
        # is given): the schema changes all or not at all, and the lock goes with the commit or
        # the rollback, whatever fails.
        with self.engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL + NORMAL: durable across a process crash, and commits cost no fsync each.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def claimable(db: Database, column: Any, replica: str) -> Any:
    """Rows a starting replica takes as its own (`column`: their `replica`): one box (SQLite)
    takes all, whatever name it had before; replicas take those from before replicas had names.
    Claimed in one UPDATE, so of several replicas starting together one gets each."""
    unclaimed = column.is_(None)
    return unclaimed if db.shared else or_(unclaimed, column != replica)


def claim_unfinished(
    db: Database, table: type[DocumentRow] | type[AvatarRow], unfinished: Any, replica: str
) -> list[str]:
    """Ids of the unfinished work (`unfinished`: a condition on `table`) this replica resumes:
    its own, and what it claims."""
    with db.session() as session:
        session.execute(update(table).where(unfinished, claimable(db, table.replica, replica)).values(replica=replica))
        return list(session.scalars(select(table.id).where(unfinished, table.replica == replica)))


def check_owner(db: Session, owner_id: int | None) -> None:
    """An owner named by a client must be a teacher (a foreign key error would be a 500)."""
    if owner_id is not None and db.get(TeacherRow, owner_id) is None:
        raise InvalidInput(f"teacher {owner_id} does not exist")
