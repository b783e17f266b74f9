"""Several boxes, one service: two `python app.py` replicas on one real PostgreSQL, one real
Chroma server and one avatars folder, started together as an operator would start them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
import websockets

from tests.kit.live import collect_answer, free_port
from tests.kit.media import portrait_video
from tests.kit.servers import Postgres, running_chroma

ROOT = Path(__file__).resolve().parents[1]

NOTES = (
    b"# Volcanoes\n\nMagma that reaches the surface is called lava. "
    b"The Ring of Fire around the Pacific Ocean holds most of the world's active volcanoes.\n"
)


@dataclass
class Replica:
    name: str
    env: dict[str, str]
    folder: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}.log"

    def start(self) -> None:
        env = {**self.env, "MANAGEMENT_API_PORT": str(self.port), "REPLICA_NAME": self.name}
        env["DATA_DIR"] = str(self.folder / self.name)
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "app.py")], cwd=self.folder, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_ready(self, budget: float = 120) -> None:
        deadline = time.monotonic() + budget
        while True:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.base}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{self.name} not ready: {self.log.read_text()[-3000:]}"
            time.sleep(0.2)

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(timeout=30)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30)


@dataclass
class Pair:
    a: Replica
    b: Replica
    database: str


def _environment(folder: Path, database: str, chroma_port: int) -> dict[str, str]:
    ours = ("MANAGEMENT_", "LLM_", "ALLOW_", "OLLAMA_", "TUTOR_", "ENABLE_", "DEFAULT_LLM", "DATABASE_URL", "REPLICA")
    ours += ("ASR_", "TTS_", "EDGE_", "VAD_", "PIPER_", "MUSETALK_", "LIPSYNC_", "AVATAR", "CHROMA_", "MAX_SESSIONS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(
        DATABASE_URL=database,
        CHROMA_HOST="127.0.0.1",
        CHROMA_PORT=str(chroma_port),
        AVATARS_DIR=str(folder / "shared-avatars"),  # the shared mount of a real deployment
        ENABLE_LLM="false",  # the embedded model: no Ollama here
        ENABLE_ASR="false",
        TTS_ENGINE="piper",  # offline voice, so answers come with lip-synced video
        LIPSYNC_ENGINE="warp",
        MAX_SESSIONS="4",
        HF_HUB_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="module")
def pair(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    folder = tmp_path_factory.mktemp("replicas")
    database = postgres.new_database()
    with running_chroma(folder / "chroma") as chroma_port:
        env = _environment(folder, database, chroma_port)
        a, b = Replica("box-a", env, folder), Replica("box-b", env, folder)
        a.start()
        b.start()  # at once, on an empty database: both try to migrate it
        try:
            a.wait_ready()
            b.wait_ready()
            yield Pair(a, b, database)
        finally:
            a.stop()
            b.stop()


def test_two_replicas_started_together_migrate_the_database_once(pair: Pair) -> None:
    logs = pair.a.log.read_text() + pair.b.log.read_text()
    assert logs.count("Running upgrade  -> 0001") == 1, logs[-3000:]
    with psycopg.connect(pair.database) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("0006",)]
    for replica in (pair.a, pair.b):
        assert httpx.get(f"{replica.base}/health").json()["replica"] == replica.name


def _ws(session: dict) -> str:
    return f"{session['engine_url']}?token={session['engine_token']}"


def _wait_ready_document(api: httpx.Client, kb_id: str, doc_id: str) -> None:
    deadline = time.monotonic() + 60
    while (state := api.get(f"/v1/kbs/{kb_id}/documents/{doc_id}").json())["status"] != "ready":
        assert state["status"] != "failed" and time.monotonic() < deadline, state
        time.sleep(0.1)


async def test_what_is_made_on_one_replica_is_read_changed_and_used_on_the_other(pair: Pair) -> None:
    with pair.a.api() as a, pair.b.api() as b:
        tutor = a.post("/v1/tutors", json={"name": "Vulcan", "subject": "geology"}).json()
        assert b.get(f"/v1/tutors/{tutor['id']}").json()["name"] == "Vulcan"
        kb = a.post("/v1/kbs", json={"name": "Earth science"}).json()["id"]
        # B searches first, so it holds a keyword index of the empty knowledge base.
        assert b.post(f"/v1/kbs/{kb}/search", json={"query": "Ring of Fire"}).json()["results"] == []
        session = a.post("/v1/sessions", json={"tutor_id": tutor["id"]}).json()
        assert session["engine_url"].startswith(f"ws://127.0.0.1:{pair.a.port}/")
        async with websockets.connect(_ws(session)) as ws:  # a live session on A, before the changes
            document = a.post(f"/v1/kbs/{kb}/documents", files={"file": ("volcanoes.md", NOTES)}).json()
            _wait_ready_document(b, kb, document["id"])  # A ingests; B sees its progress
            found = b.post(f"/v1/kbs/{kb}/search", json={"query": "Where is the Ring of Fire?"}).json()["results"]
            assert found and found[0]["source"]["document"] == "volcanoes.md"
            changed = b.patch(f"/v1/tutors/{tutor['id']}", json={"kb_ids": [kb], "name": "Vulcana"})
            assert changed.status_code == 200, changed.text
            assert a.get(f"/v1/tutors/{tutor['id']}").json()["name"] == "Vulcana"
            await ws.send(json.dumps({"type": "text", "content": "What is magma called when it reaches the surface?"}))
            answer = (await collect_answer(ws, timeout=90))[-1]
    assert answer["type"] == "text", answer
    assert answer["sources"] and answer["sources"][0]["document"] == "volcanoes.md", answer  # B's change, on A
    assert "lava" in answer["content"].lower()


async def test_a_session_made_on_a_is_listed_on_b_and_deleting_it_there_closes_its_socket_on_a(pair: Pair) -> None:
    with pair.a.api() as a, pair.b.api() as b:
        tutor = b.post("/v1/tutors", json={"name": "Ada", "subject": "math"}).json()
        session = a.post("/v1/sessions", json={"tutor_id": tutor["id"], "student_id": 7}).json()
        listed = {s["session_id"]: s for s in b.get("/v1/sessions").json()["sessions"]}
        assert listed[session["session_id"]]["replica"] == "box-a"
        assert b.get(f"/v1/sessions/{session['session_id']}").json()["status"] == "active"
        async with websockets.connect(_ws(session)) as ws:  # accepted: A holds it
            started = time.monotonic()
            deleted = await asyncio.to_thread(b.delete, f"/v1/sessions/{session['session_id']}")
            assert deleted.status_code == 200 and deleted.json()["status"] == "ended", deleted.text
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            closed_after = time.monotonic() - started
        assert closed_after <= 2.0, f"A closed the socket {closed_after:.2f}s after B's DELETE"
        assert session["session_id"] not in {s["session_id"] for s in a.get("/v1/sessions").json()["sessions"]}
        with pytest.raises(websockets.InvalidStatus):  # the token is dead on A too
            async with websockets.connect(_ws(session)):
                pass


async def test_an_avatar_prepared_on_one_replica_speaks_on_the_other(pair: Pair, tmp_path: Path) -> None:
    video = portrait_video(tmp_path / "teacher.mp4", seconds=2.0)
    with pair.a.api() as a, pair.b.api() as b:
        with video.open("rb") as f:
            made = a.post("/v1/avatars/upload", data={"avatar_id": "shared-face"}, files={"file": ("t.mp4", f)})
        assert made.status_code == 202, made.text
        deadline = time.monotonic() + 120
        while (state := b.get("/v1/avatars/shared-face").json())["status"] == "preparing":
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
        assert state["status"] == "ready", state
        tutor = b.post("/v1/tutors", json={"name": "Ada", "avatar_id": "shared-face"}).json()
        session = b.post("/v1/sessions", json={"tutor_id": tutor["id"]}).json()
        async with websockets.connect(_ws(session)) as ws:
            await ws.send(json.dumps({"type": "text", "content": "Say hello."}))
            received = await collect_answer(ws, timeout=90)
            while not any(m["type"] == "video" for m in received):  # video follows the voice
                received.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        assert b.delete("/v1/avatars/shared-face").status_code == 204
        assert a.get("/v1/avatars/shared-face").status_code == 404


def test_max_sessions_is_per_box_and_a_full_box_answers_429(pair: Pair) -> None:
    with pair.a.api() as a, pair.b.api() as b:
        tutor = a.post("/v1/tutors", json={"name": "Ada"}).json()
        before = a.get("/health").json()["sessions"]["active"]  # earlier tests' sessions on A
        made = []
        while (response := a.post("/v1/sessions", json={"tutor_id": tutor["id"]})).status_code == 201:
            made.append(response.json()["session_id"])
            assert len(made) <= 4, "box A took more than its MAX_SESSIONS"
        assert response.status_code == 429 and response.json()["code"] == "session_limit", response.text
        assert a.get("/health").json()["sessions"] == {"active": 4, "max": 4} and len(made) == 4 - before
        full = a.get("/health/ready")
        assert full.status_code == 503 and "full: 4 of 4 sessions" in full.json()["reasons"]
        assert b.post("/v1/sessions", json={"tutor_id": tutor["id"]}).status_code == 201  # the balancer's next box
        for session_id in made:
            assert b.delete(f"/v1/sessions/{session_id}").status_code == 200
        deadline = time.monotonic() + 5
        while a.get("/health").json()["sessions"]["active"] != before:
            assert time.monotonic() < deadline, "B's DELETEs did not free A's slots"
            time.sleep(0.1)


async def test_killing_a_leaves_b_serving_and_a_takes_its_sessions_back_on_restart(pair: Pair) -> None:
    with pair.a.api() as a, pair.b.api() as b:
        tutor = a.post("/v1/tutors", json={"name": "Ada"}).json()
        held = a.post("/v1/sessions", json={"tutor_id": tutor["id"]}).json()
        holding = a.get("/health").json()["sessions"]["active"]
        pair.a.stop(kill=True)  # a power cut: nothing shuts down cleanly
        assert b.get("/health/ready").status_code == 200
        other = b.post("/v1/sessions", json={"tutor_id": tutor["id"]}).json()
        listed = {s["session_id"]: s["replica"] for s in b.get("/v1/sessions").json()["sessions"]}
        assert listed[held["session_id"]] == "box-a" and listed[other["session_id"]] == "box-b"
        with pytest.raises(websockets.InvalidStatus):  # B does not hold A's sessions
            async with websockets.connect(_ws(held).replace(str(pair.a.port), str(pair.b.port))):
                pass
        pair.a.start()
        pair.a.wait_ready()
        async with websockets.connect(_ws(held)) as ws:  # the same engine_url and token as before
            await ws.send(json.dumps({"type": "text", "content": "Say hello."}))
            answer = (await collect_answer(ws, timeout=90))[-1]
        assert answer["type"] == "text" and answer["content"], answer
        assert a.get("/health").json()["sessions"]["active"] == holding  # every one it held, and no more


async def test_a_replica_that_lost_the_databases_news_catches_up_when_it_listens_again(postgres: Postgres) -> None:
    """A's listening connection is cut; B ends A's session while A cannot hear it. When A
    listens again it re-reads the database and lets the session go all the same."""
    from app.conversation.sessions import SessionManager
    from app.core.db import Database
    from app.core.events import PostgresEvents
    from app.core.settings import Settings
    from tutors.store import TutorStore

    url = Settings(database_url=postgres.new_database()).database
    db_a, db_b = Database(url), Database(url)
    db_a.migrate()
    events_a = PostgresEvents(db_a.engine, "a", retry_seconds=1.5)
    events_b = PostgresEvents(db_b.engine, "b")
    a = SessionManager(db_a, max_sessions=5, timeout_seconds=600, replica="a", events=events_a)
    b = SessionManager(db_b, max_sessions=5, timeout_seconds=600, replica="b", events=events_b)
    let_go: asyncio.Queue = asyncio.Queue()

    async def told(info) -> None:
        await let_go.put(info)

    a.bind_loop(asyncio.get_running_loop())
    a.on_end(told)
    events_a.start()
    try:
        assert await asyncio.to_thread(events_a.listening.wait, 10)
        tutor = TutorStore(db_a).create({"name": "Ada"})
        info, _token = a.create(tutor.id, None, None)
        with db_b.transaction() as connection:  # cut A's LISTEN connection, as a network blip would
            connection.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
            )
        deadline = time.monotonic() + 5
        while not events_a.problem():  # A has noticed, and waits before listening again
            assert time.monotonic() < deadline, "A never noticed its connection was cut"
            await asyncio.sleep(0.02)
        assert "not listening" in events_a.problem()  # /health/ready says so meanwhile
        assert b.end(info.id).status == "ended"  # announced while A cannot hear it
        assert a.count_active() == 1
        ended = await asyncio.wait_for(let_go.get(), 10)
        assert ended.id == info.id and ended.status == "ended" and a.count_active() == 0
        assert events_a.problem() == ""
    finally:
        events_a.close()
        db_a.close()
        db_b.close()


def test_the_sweep_ends_a_dead_replicas_idle_sessions(postgres: Postgres) -> None:
    """A box that died holds its sessions in the database forever unless another ends them:
    any replica's sweep ends them once idle past the timeout (plus one write interval)."""
    from app.conversation.sessions import SessionManager
    from app.core.db import Database
    from app.core.settings import Settings
    from tutors.store import TutorStore

    url = Settings(database_url=postgres.new_database()).database
    db = Database(url)
    db.migrate()
    tutor = TutorStore(db).create({"name": "Ada"})
    dead = SessionManager(db, max_sessions=5, timeout_seconds=600, replica="dead")
    info, _token = dead.create(tutor.id, None, None)
    alive = SessionManager(db, max_sessions=5, timeout_seconds=0.5, replica="alive")
    assert alive.expire_idle() == [] and alive.expire_abandoned() == []  # not idle long enough yet
    time.sleep(0.8)
    assert alive.expire_idle() == []  # a request's sweep: this box's sessions only
    assert alive.expire_abandoned() == [info.id]
    assert alive.get(info.id).status == "expired"
    db.close()
