"""What survives a restart, and the schema that migrations own."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import websockets
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.core.db import Base, Database
from tests.kit.live import collect_answer, new_session, new_tutor, ws_url

ROOT = Path(__file__).resolve().parents[1]


async def test_tutors_sessions_tokens_and_history_survive_a_restart(server) -> None:
    with server.client() as api:
        tutor = new_tutor(api, "Ada", persona="Be kind.")
        session = new_session(api, tutor["id"], student_id=9)
        ended = new_session(api, tutor["id"], student_id=10)
        api.delete(f"/v1/sessions/{ended['session_id']}")
    async with websockets.connect(ws_url(session)) as ws:
        await ws.send(json.dumps({"type": "text", "content": "first", "session_id": 3}))
        await collect_answer(ws)

    server.restart()

    with server.client() as api:
        assert api.get(f"/v1/tutors/{tutor['id']}").json()["persona"] == "Be kind."
        assert api.get(f"/v1/sessions/{session['session_id']}").json()["status"] == "active"
        assert api.get(f"/v1/sessions/{ended['session_id']}").json()["status"] == "ended"
    async with websockets.connect(ws_url(session)) as ws:
        await ws.send(json.dumps({"type": "text", "content": "second", "session_id": 3}))
        assert (await collect_answer(ws))[-1]["content"] == "[Ada|1] second"
    try:
        async with websockets.connect(ws_url(ended)):
            raise AssertionError("an ended session's token worked after a restart")
    except websockets.exceptions.InvalidStatus:
        pass


def test_migrations_build_exactly_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    Database(url).migrate()
    engine = create_engine(url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], f"models and migrations disagree; write a migration: {diff}"
    assert {"tutors", "sessions", "messages", "alembic_version"} <= set(inspect(engine).get_table_names())


def test_postgresql_from_an_operators_url_migrates_once_when_replicas_start_together(postgres) -> None:
    """Five replicas' migrations let loose at the same instant on one empty PostgreSQL: one
    builds the schema, the others wait for it and find nothing to do (none fails)."""
    from app.core.settings import Settings

    url = Settings(database_url=postgres.new_database()).database
    assert url.startswith("postgresql+psycopg://")
    go = time.time() + 4  # after every process has imported what it needs
    script = (
        "import sys, time; from app.core.db import Database; db = Database(sys.argv[1]); "
        "time.sleep(max(0, float(sys.argv[2]) - time.time())); db.migrate()"
    )
    replicas = [
        subprocess.Popen([sys.executable, "-c", script, url, str(go)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for _ in range(5)
    ]
    failures = [p.stderr.read()[-2000:] for p in replicas if p.wait(timeout=60) != 0]
    assert not failures, failures[0]
    db = Database(url)
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == ["0006"]
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    db.close()
    assert diff == [], f"models and migrations disagree on PostgreSQL: {diff}"


def test_migrating_twice_keeps_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    from tutors.store import TutorStore

    db = Database(url)
    db.migrate()
    TutorStore(db).create({"name": "Keep me"})
    db.close()
    again = Database(url)
    again.migrate()
    assert [t.name for t in TutorStore(again).list()] == ["Keep me"]


def test_a_database_from_the_first_release_upgrades_in_place(tmp_path: Path) -> None:
    """An operator's existing database (revision 0001, with data) upgrades without loss."""
    from alembic import command
    from alembic.config import Config

    from app.core.db import MIGRATIONS_DIR

    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection_url"] = url
    command.upgrade(config, "0001")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO tutors (name, subject, persona, greeting, language, kb_ids, created_at, updated_at) "
            "VALUES ('Old tutor', '', '', '', 'zh', '[]', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
    Database(url).migrate()
    from tutors.store import TutorStore

    (tutor,) = TutorStore(Database(url)).list()
    assert tutor.name == "Old tutor" and tutor.language == "zh" and tutor.owner_id is None
    command.downgrade(config, "0001")  # and back, for an operator who must roll back
    command.upgrade(config, "head")


def test_one_box_keeps_its_sessions_and_unfinished_work_under_a_new_name(tmp_path: Path) -> None:
    """A container recreated with a new host name (or a new port) is still the only box: it
    holds every active session and resumes every interrupted upload, whatever name made them."""
    from app.conversation.sessions import SessionManager
    from app.core.db import AvatarRow, DocumentRow, KnowledgeBaseRow, claim_unfinished
    from tutors.store import TutorStore

    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.migrate()
    tutor = TutorStore(db).create({"name": "Ada"})
    before = SessionManager(db, max_sessions=5, timeout_seconds=600, replica="old-host:9000")
    info, token = before.create(tutor.id, None, None)
    with db.session() as session:
        session.add(KnowledgeBaseRow(id="kb", name="Notes"))
        session.flush()  # the document's foreign key needs it first
        session.add(DocumentRow(id="d1", kb_id="kb", filename="a.md", kind="md", sha256="0", size=1, replica="old"))
        session.add(AvatarRow(id="face", source="f.mp4", status="preparing", replica="old"))

    after = SessionManager(db, max_sessions=5, timeout_seconds=600, replica="new-host:9000")
    assert after.count_active() == 1 and after.authenticate(info.id, token).id == info.id
    assert [s.replica for s in after.list_active()] == ["new-host:9000"]
    assert claim_unfinished(db, DocumentRow, DocumentRow.status == "queued", "new") == ["d1"]
    assert claim_unfinished(db, AvatarRow, AvatarRow.status == "preparing", "new") == ["face"]
    db.close()
