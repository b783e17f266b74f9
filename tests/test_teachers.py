"""Teacher accounts, ownership, transcripts and usage figures."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets

from app.core.db import Database
from tests.kit.live import collect_answer, new_session, new_tutor, ws_url
from tutors.accounts import TeacherStore

ROOT = Path(__file__).resolve().parents[1]


def test_accounts_over_rest(api: httpx.Client, server) -> None:
    created = api.post("/v1/teachers", json={"username": "wang", "password": "correct horse"})
    assert created.status_code == 201 and created.json()["is_admin"] is False
    assert "password" not in created.text
    assert api.post("/v1/teachers", json={"username": "wang", "password": "another one!"}).status_code == 409
    assert api.post("/v1/teachers", json={"username": "li", "password": "short"}).status_code == 422
    assert api.post("/v1/teachers", json={"username": "bad name!", "password": "long enough pw"}).status_code == 422
    teachers = server.services.teachers
    assert teachers.verify("wang", "correct horse").username == "wang"
    assert teachers.verify("wang", "wrong horse") is None and teachers.verify("nobody", "correct horse") is None
    with server.services.db.transaction() as db:
        stored = db.exec_driver_sql("SELECT password_hash FROM teachers").scalar()
    assert stored.startswith("scrypt$") and "correct horse" not in stored


def test_tutor_ownership(api: httpx.Client) -> None:
    teacher = api.post("/v1/teachers", json={"username": "wang", "password": "correct horse"}).json()
    mine = new_tutor(api, "Mine", owner_id=teacher["id"])
    assert mine["owner_id"] == teacher["id"]
    assert api.post("/v1/tutors", json={"name": "Orphan", "owner_id": 999}).status_code == 422
    assert api.patch(f"/v1/tutors/{mine['id']}", json={"owner_id": 999}).status_code == 422
    # Deleting the teacher keeps the tutor, without an owner.
    assert api.delete(f"/v1/teachers/{teacher['id']}").status_code == 204
    assert api.get(f"/v1/tutors/{mine['id']}").json()["owner_id"] is None


async def test_transcripts_and_usage(api: httpx.Client) -> None:
    tutor = new_tutor(api, "Ada")
    first, second = new_session(api, tutor["id"], student_id=1), new_session(api, tutor["id"], student_id=2)
    for session, questions in ((first, ["a", "b"]), (second, ["c"])):
        async with websockets.connect(ws_url(session)) as ws:
            for q in questions:
                await ws.send(json.dumps({"type": "text", "content": q, "session_id": 5}))
                await collect_answer(ws)

    # An answer is stored just after the student has it: wait for the last write to land.
    def answers_stored() -> int:
        said = [api.get(f"/v1/sessions/{s['session_id']}/messages").json() for s in (first, second)]
        return sum(m["role"] == "assistant" for messages in said for m in messages)

    deadline = time.monotonic() + 10
    while answers_stored() < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    sessions = api.get(f"/v1/tutors/{tutor['id']}/sessions").json()
    assert {s["session_id"]: s["turns"] for s in sessions} == {first["session_id"]: 2, second["session_id"]: 1}
    transcript = api.get(f"/v1/sessions/{first['session_id']}/messages").json()
    assert [(m["role"], m["content"]) for m in transcript] == [
        ("user", "a"),
        ("assistant", "[Ada|0] a"),
        ("user", "b"),
        ("assistant", "[Ada|1] b"),
    ]
    assert transcript[1]["meta"]["engine"] == "scripted" and transcript[1]["chat_id"] == "5"
    usage = api.get(f"/v1/tutors/{tutor['id']}/usage").json()
    assert usage["sessions"] == 2 and usage["students"] == 2 and usage["turns"] == 3
    assert usage["active_sessions"] == 2 and usage["avg_answer_ms"] is not None
    assert api.get("/v1/tutors/999/usage").status_code == 404
    assert api.get("/v1/sessions/nope/messages").status_code == 404


def test_first_admin_from_the_cli(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}

    def create_admin(name: str, password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tutors.accounts", "create-admin", name, "--password-stdin"],
            input=password + "\n",
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )

    run = create_admin("root_teacher", "a long admin password")
    assert run.returncode == 0, run.stderr
    teachers = TeacherStore(Database(f"sqlite:///{tmp_path / 'tutor.db'}"))
    assert teachers.verify("root_teacher", "a long admin password").is_admin
    weak = create_admin("other", "short")
    assert weak.returncode == 1 and "at least 10" in weak.stderr


def test_first_admin_from_settings(start_server) -> None:
    server = start_server(admin_username="boss", admin_password="from the environment")
    assert server.services.teachers.verify("boss", "from the environment").is_admin
    server.restart()  # an existing account is left as it is
    assert len(server.services.teachers.list()) == 1


def test_repeated_wrong_passwords_lock_the_username_for_a_while() -> None:
    from app.core.errors import TooBusy
    from tutors.accounts import LoginThrottle

    now = [1000.0]
    throttle = LoginThrottle(attempts=3, window_seconds=60, clock=lambda: now[0])
    for _ in range(3):
        throttle.check("wang")
        throttle.failed("wang")
    with pytest.raises(TooBusy, match="try again in"):
        throttle.check("wang")
    throttle.check("liu_li")  # other accounts are unaffected
    now[0] += 61
    throttle.check("wang")  # the window has passed
    throttle.failed("wang")
    throttle.succeeded("wang")
    throttle.check("wang")
