"""The management REST contract over real HTTP: sessions, tutors, health, auth, bad input."""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import pytest
import websockets

from tests.kit.live import LiveServer, new_session, new_tutor, ws_url


def test_health_reports_each_stage_engine(api: httpx.Client) -> None:
    body = api.get("/health").json()
    assert body["status"] == "ok"
    assert body["engines"] == {"llm": "scripted", "embeddings": "minilm"}
    assert body["stages"]["llm"]["state"] in ("warming", "ready")
    assert body["sessions"] == {"active": 0, "max": 10}


def test_a_load_balancer_reads_liveness_and_readiness(api: httpx.Client, server: LiveServer) -> None:
    """Ready: every engine warm and the database answering; live whatever they do. Both open."""
    from sqlalchemy import create_engine

    deadline = time.monotonic() + 60
    while (ready := api.get("/health/ready")).status_code != 200:
        assert time.monotonic() < deadline, ready.json()
        time.sleep(0.2)
    assert ready.json() == {"ready": True, "reasons": []}
    services = server.services
    assert services is not None
    llm = services.warmup.states["llm"]
    llm.state = "failed"  # as a warm-up that raised leaves it
    working, services.db.engine = services.db.engine, create_engine("sqlite:////nonexistent/folder/tutor.db")
    try:
        down = httpx.get(f"{api.base_url}/health/ready")  # no key needed
        assert down.status_code == 503
        assert down.json()["reasons"] == ["llm: failed", "database unreachable: OperationalError"]
        assert httpx.get(f"{api.base_url}/health/live").json() == {"status": "alive"}
    finally:
        services.db.engine, llm.state = working, "ready"
    assert api.get("/health/ready").status_code == 200


async def test_prometheus_reads_sessions_turns_and_stage_latency(api: httpx.Client, server: LiveServer) -> None:
    session = new_session(api, new_tutor(api)["id"])
    async with websockets.connect(ws_url(session)) as ws:
        await ws.send(json.dumps({"type": "text", "content": "What is a cell?"}))
        while json.loads(await ws.recv())["type"] != "text":
            pass
        scraped = httpx.get(f"{api.base_url}/metrics")  # open, like /health
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        lines = set(scraped.text.splitlines())
        assert {"tutor_sessions_active 1.0", "tutor_websockets 1.0", "tutor_calls 0.0"} <= lines
        assert 'tutor_stage_seconds_count{stage="llm"} 1.0' in lines
    deadline = time.monotonic() + 5  # the turn is counted once its answer is stored
    while 'tutor_turns_total{outcome="answered"} 1.0' not in api.get("/metrics").text:
        assert time.monotonic() < deadline, api.get("/metrics").text
        time.sleep(0.05)


def test_session_lifecycle(api: httpx.Client, server: LiveServer) -> None:
    tutor = new_tutor(api)
    created = api.post("/v1/sessions", json={"tutor_id": tutor["id"], "student_id": 123, "kb_id": "kb-001"})
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"session_id", "engine_url", "engine_token", "status"}
    assert body["status"] == "active"
    assert body["engine_url"] == f"ws://127.0.0.1:{server.settings.management_api_port}/ws/{body['session_id']}"
    assert len(body["engine_token"]) >= 32

    got = api.get(f"/v1/sessions/{body['session_id']}").json()
    assert got["tutor_id"] == tutor["id"] and got["student_id"] == 123 and got["kb_id"] == "kb-001"
    assert got["status"] == "active" and got["created_at"] and got["last_activity_at"]
    assert "token" not in str(got).lower()

    listed = api.get("/v1/sessions").json()
    assert [s["session_id"] for s in listed["sessions"]] == [body["session_id"]]

    ended = api.delete(f"/v1/sessions/{body['session_id']}")
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    assert ended.json()["end_reason"] == "deleted" and ended.json()["ended_at"]
    assert api.get("/v1/sessions").json()["count"] == 0
    assert api.get(f"/v1/sessions/{body['session_id']}").json()["status"] == "ended"


def test_unknown_tutor_and_session_are_404(api: httpx.Client) -> None:
    response = api.post("/v1/sessions", json={"tutor_id": 999})
    assert response.status_code == 404
    assert "tutor 999" in response.json()["detail"]
    assert api.get("/v1/sessions/nope").status_code == 404
    assert api.delete("/v1/sessions/nope").status_code == 404


def test_max_sessions_is_enforced_under_concurrency(start_server) -> None:
    server = start_server(max_sessions=5)
    with server.client() as client:
        tutor = new_tutor(client)

        def create(_: int) -> int:
            return client.post("/v1/sessions", json={"tutor_id": tutor["id"]}).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(create, range(20)))
        assert codes.count(201) == 5
        assert codes.count(429) == 15
        refused = client.post("/v1/sessions", json={"tutor_id": tutor["id"]})
        assert refused.status_code == 429 and "5 session slots" in refused.json()["detail"]
        # Ending one frees one slot.
        first = client.get("/v1/sessions").json()["sessions"][0]["session_id"]
        client.delete(f"/v1/sessions/{first}")
        assert client.post("/v1/sessions", json={"tutor_id": tutor["id"]}).status_code == 201
        assert client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    "body, content_type",
    [
        ("{not json", "application/json"),
        ('{"tutor_id": "abc"}', "application/json"),
        ('{"tutor_id": [1]}', "application/json"),
        ('{"student_id": 1}', "application/json"),
        ('{"tutor_id": 1, "student_id": {"x": 1}}', "application/json"),
        ("[]", "application/json"),
        ("tutor_id=1", "application/x-www-form-urlencoded"),
    ],
)
def test_bad_session_bodies_get_422_with_detail(api: httpx.Client, body: str, content_type: str) -> None:
    new_tutor(api)
    response = api.post("/v1/sessions", content=body, headers={"content-type": content_type})
    assert response.status_code == 422
    assert response.json()["detail"]
    assert api.get("/health").status_code == 200


def test_idle_sessions_expire(start_server) -> None:
    server = start_server(session_timeout_seconds=1.0)
    with server.client() as client:
        tutor = new_tutor(client)
        session = new_session(client, tutor["id"])
        assert client.get("/v1/sessions").json()["count"] == 1
        deadline = time.monotonic() + 5
        while client.get(f"/v1/sessions/{session['session_id']}").json()["status"] == "active":
            assert time.monotonic() < deadline, "session never expired"
            time.sleep(0.1)
        got = client.get(f"/v1/sessions/{session['session_id']}").json()
        assert got["status"] == "expired" and got["end_reason"] == "idle_timeout"
        assert client.get("/v1/sessions").json()["count"] == 0


def test_sweeper_expires_without_any_request(start_server) -> None:
    server = start_server(session_timeout_seconds=0.5)
    with server.client() as client:
        session = new_session(client, new_tutor(client)["id"])
    deadline = time.monotonic() + 5
    while server.services.sessions.count_active():
        assert time.monotonic() < deadline, "sweeper never ended the idle session"
        time.sleep(0.1)
    assert server.services.sessions.get(session["session_id"]).status == "expired"


def test_tutor_crud(api: httpx.Client) -> None:
    created = new_tutor(
        api,
        "Li Lei",
        subject="数学",
        persona="你是一位耐心的数学老师。",
        greeting="你好！",
        language="zh",
        llm_model="qwen2.5:7b",
        voice="zh-CN-XiaoxiaoNeural",
        temperature=0.3,
        kb_ids=["kb-001"],
    )
    assert isinstance(created["id"], int)
    assert created["persona"] == "你是一位耐心的数学老师。" and created["kb_ids"] == ["kb-001"]
    assert api.get(f"/v1/tutors/{created['id']}").json() == created
    patched = api.patch(f"/v1/tutors/{created['id']}", json={"subject": "Algebra", "voice": None}).json()
    assert patched["subject"] == "Algebra" and patched["voice"] is None
    assert patched["persona"] == created["persona"]
    assert [t["id"] for t in api.get("/v1/tutors").json()] == [created["id"]]
    assert api.delete(f"/v1/tutors/{created['id']}").status_code == 204
    assert api.get(f"/v1/tutors/{created['id']}").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": 5},
        {"name": "A", "temperature": 9},
        {"name": "A", "kb_ids": "kb"},
        {"name": "A", "language": "not a language"},
    ],
)
def test_bad_tutor_bodies_get_422(api: httpx.Client, body: dict) -> None:
    assert api.post("/v1/tutors", json=body).status_code == 422


def test_patch_cannot_null_a_required_field(api: httpx.Client) -> None:
    tutor = new_tutor(api)
    response = api.patch(f"/v1/tutors/{tutor['id']}", json={"name": None})
    assert response.status_code == 422
    assert api.get(f"/v1/tutors/{tutor['id']}").json()["name"] == "Ada"


def test_deleting_a_tutor_with_live_sessions_is_refused(api: httpx.Client) -> None:
    tutor = new_tutor(api)
    session = new_session(api, tutor["id"])
    refused = api.delete(f"/v1/tutors/{tutor['id']}")
    assert refused.status_code == 409 and "active session" in refused.json()["detail"]
    api.delete(f"/v1/sessions/{session['session_id']}")
    assert api.delete(f"/v1/tutors/{tutor['id']}").status_code == 204


def test_management_routes_require_the_key_when_set(start_server) -> None:
    server = start_server(management_api_key="s3cret-key")
    with server.client() as anonymous, server.client("wrong") as wrong, server.client("s3cret-key") as admin:
        assert anonymous.get("/health").status_code == 200
        for client in (anonymous, wrong):
            for method, path in [
                ("GET", "/v1/sessions"),
                ("POST", "/v1/tutors"),
                ("GET", "/v1/tutors"),
                ("POST", "/v1/sessions"),
                ("DELETE", "/v1/sessions/x"),
            ]:
                response = client.request(method, path, json={"name": "x", "tutor_id": 1})
                assert response.status_code == 401, (method, path)
                assert "MANAGEMENT_API_KEY" in response.json()["detail"]
        tutor = new_tutor(admin)
        assert new_session(admin, tutor["id"])["status"] == "active"
        # The key appears nowhere a browser can read.
        assert "s3cret-key" not in anonymous.get("/openapi.json").text


def test_openapi_documents_the_routes(api: httpx.Client) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for path in ("/health", "/v1/sessions", "/v1/sessions/{session_id}", "/v1/tutors", "/v1/tutors/{tutor_id}"):
        assert path in paths


def test_engine_url_follows_the_host_the_backend_used(start_server) -> None:
    server = start_server()
    with server.client() as api:
        tutor = new_tutor(api)
        body = api.post("/v1/sessions", json={"tutor_id": tutor["id"]}, headers={"Host": "tutor.example:8443"}).json()
        assert body["engine_url"] == f"ws://tutor.example:8443/ws/{body['session_id']}"
    fixed = start_server(websocket_url="wss://public.example/tutor")
    with fixed.client() as api:
        body = new_session(api, new_tutor(api)["id"])
        assert body["engine_url"] == f"wss://public.example/tutor/ws/{body['session_id']}"
