"""The contract WebSocket over real sockets: streaming answers, both connection modes,
tokens, session ends, and every kind of bad input."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.kit.live import LiveServer, collect_answer, new_session, new_tutor, ws_url


def _ask(content: str, **fields) -> str:
    return json.dumps({"type": "text", "content": content, **fields})


async def test_text_turn_streams_deltas_then_one_final_text(api: httpx.Client) -> None:
    tutor = new_tutor(api, "Ada")
    session = new_session(api, tutor["id"])
    async with websockets.connect(ws_url(session)) as ws:
        await ws.send(_ask("What is a prime?", tutor_id=tutor["id"], session_id=59, user_id=1))
        messages = await collect_answer(ws)
    deltas = [m for m in messages if m["type"] == "text_delta"]
    final = messages[-1]
    assert len(deltas) >= 2 and all(m["role"] == "assistant" for m in deltas)
    assert final["type"] == "text" and final["final"] is True and final["role"] == "assistant"
    assert final["content"] == "[Ada|0] What is a prime?"
    assert "".join(m["content"] for m in deltas).strip() == final["content"]
    assert final["sources"] == [] and final["timestamp"].endswith("+00:00")
    assert final["session_id"] == "59" and final["engine_session_id"] == session["session_id"]
    assert [m["type"] for m in messages].count("text") == 1


async def test_alias_path_and_history_per_chat(api: httpx.Client, server: LiveServer) -> None:
    session = new_session(api, new_tutor(api)["id"])
    alias = ws_url(session).replace("/ws/", "/ws/ws/")
    async with websockets.connect(alias) as ws:
        for chat, question in [(1, "a"), (1, "b"), (2, "c"), (1, "d")]:
            await ws.send(_ask(question, session_id=chat))
            final = (await collect_answer(ws))[-1]
        assert final["content"] == "[Ada|2] d"  # chat 1 saw a and b, never c
        await ws.send(_ask("e", session_id=2))
        assert (await collect_answer(ws))[-1]["content"] == "[Ada|1] e"
    history = server.services.conversation.history(session["session_id"], "1")
    assert [m.content for m in history if m.role == "user"] == ["a", "b", "d"]


@pytest.mark.parametrize("token", ["", "wrong", "x" * 43])
async def test_bad_tokens_are_refused_at_the_handshake(api: httpx.Client, token: str) -> None:
    session = new_session(api, new_tutor(api)["id"])
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(ws_url(session, token)):
            pass
    assert refused.value.response.status_code == 403


async def test_token_of_another_session_is_refused(api: httpx.Client) -> None:
    tutor = new_tutor(api)
    one, two = new_session(api, tutor["id"]), new_session(api, tutor["id"])
    with pytest.raises(InvalidStatus):
        async with websockets.connect(ws_url(one, two["engine_token"])):
            pass


async def test_deleting_a_session_closes_its_socket_and_kills_the_token(api: httpx.Client) -> None:
    session = new_session(api, new_tutor(api)["id"])
    async with websockets.connect(ws_url(session)) as ws:
        api.delete(f"/v1/sessions/{session['session_id']}")
        notice = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert notice["type"] == "error" and notice["code"] == "session_ended"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    with pytest.raises(InvalidStatus):
        async with websockets.connect(ws_url(session)):
            pass


async def test_expiry_closes_an_idle_socket(start_server) -> None:
    # 3 s, begun once the engines are ready: with 1 s, a session on a loaded two-core CI box
    # expired before its handshake (HTTP 403) while torch held the GIL loading engines.
    server = await start_server(session_timeout_seconds=3).warmed()
    with server.client() as api:
        session = new_session(api, new_tutor(api)["id"])
    async with websockets.connect(ws_url(session)) as ws:
        notice = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert notice["code"] == "session_ended" and "idle_timeout" in notice["content"]
    with pytest.raises(InvalidStatus):
        async with websockets.connect(ws_url(session)):
            pass


async def test_activity_keeps_a_session_alive(start_server) -> None:
    # 3 s, begun once the engines are ready (see test_expiry_closes_an_idle_socket).
    server = await start_server(session_timeout_seconds=3).warmed()
    with server.client() as api:
        session = new_session(api, new_tutor(api)["id"])
        async with websockets.connect(ws_url(session)) as ws:
            for i in range(12):  # 12 × 0.5 s: twice the timeout, never idle for a whole one
                await ws.send(_ask(f"q{i}"))
                assert (await collect_answer(ws))[-1]["type"] == "text"
                await asyncio.sleep(0.5)
        assert api.get(f"/v1/sessions/{session['session_id']}").json()["status"] == "active"


async def test_user_socket_carries_several_sessions(api: httpx.Client) -> None:
    ada, bob = new_tutor(api, "Ada"), new_tutor(api, "Bob")
    s1, s2 = new_session(api, ada["id"], student_id=42), new_session(api, bob["id"], student_id=42)
    other = new_session(api, ada["id"], student_id=7)
    base = s1["engine_url"].rsplit("/", 1)[0]
    async with websockets.connect(f"{base}/user_42?token={s1['engine_token']}") as ws:
        await ws.send(_ask("hi", engine_session_id=s2["session_id"]))
        assert (await collect_answer(ws))[-1]["content"] == "[Bob|0] hi"
        await ws.send(_ask("hi", engine_session_id=s1["session_id"]))
        final = (await collect_answer(ws))[-1]
        assert final["content"] == "[Ada|0] hi" and final["engine_session_id"] == s1["session_id"]
        for bad in ({}, {"engine_session_id": other["session_id"]}, {"engine_session_id": "nope"}):
            await ws.send(_ask("hi", **bad))
            error = json.loads(await ws.recv())
            assert error["type"] == "error" and error["code"] == "invalid_input", bad
        # Ending one session leaves the socket serving the other.
        api.delete(f"/v1/sessions/{s2['session_id']}")
        notice = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert notice["code"] == "session_ended" and notice["engine_session_id"] == s2["session_id"]
        await ws.send(_ask("still there?", engine_session_id=s1["session_id"]))
        assert (await collect_answer(ws))[-1]["type"] == "text"
        await ws.send(_ask("hi", engine_session_id=s2["session_id"]))
        assert json.loads(await ws.recv())["code"] == "session_ended"


async def test_user_socket_needs_a_token_of_that_user(api: httpx.Client) -> None:
    tutor = new_tutor(api)
    mine, theirs = new_session(api, tutor["id"], student_id=42), new_session(api, tutor["id"], student_id=7)
    base = mine["engine_url"].rsplit("/", 1)[0]
    for path in (f"user_42?token={theirs['engine_token']}", "user_42?token=", f"user_x?token={mine['engine_token']}"):
        with pytest.raises(InvalidStatus):
            async with websockets.connect(f"{base}/{path}"):
                pass


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('"text"', "JSON object"),
        ("{}", "type"),
        ('{"type": "dance"}', "unknown message type"),
        ('{"type": "text"}', "must be a string"),
        ('{"type": "text", "content": "   "}', "empty"),
        ('{"type": "text", "content": ["a"]}', "must be a string"),
        ('{"type": "text", "content": "hi", "tutor_id": "x"}', "tutor_id"),
        ('{"type": "text", "content": "hi", "tutor_id": 999}', "does not match"),
        ('{"type": "text", "content": "hi", "engine_session_id": "other"}', "does not match"),
        ('{"type": "audio", "content": "AAAA"}', "speech input is turned off"),
        ('{"type": "webrtc_offer", "content": "v=0"}', "live calls need"),
        ('{"type": "text", "content": "' + "x" * 5000 + '"}', "longer than"),
    ],
)
async def test_bad_messages_get_an_error_and_the_socket_stays_usable(
    api: httpx.Client, raw: str, fragment: str
) -> None:
    session = new_session(api, new_tutor(api)["id"])
    async with websockets.connect(ws_url(session)) as ws:
        await ws.send(raw)
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and fragment in error["content"], error
        await ws.send(_ask("still fine?"))
        assert (await collect_answer(ws))[-1]["content"].endswith("still fine?")


async def test_binary_and_oversized_frames_get_errors(start_server) -> None:
    server = start_server(ws_max_message_bytes=4096)
    with server.client() as api:
        session = new_session(api, new_tutor(api)["id"])
    async with websockets.connect(ws_url(session)) as ws:
        await ws.send(b"\x00\x01")
        assert "binary" in json.loads(await ws.recv())["content"]
        payload = base64.b64encode(b"\x00" * 6000).decode()
        await ws.send(json.dumps({"type": "audio", "content": payload}))
        assert "larger than 4096" in json.loads(await ws.recv())["content"]
        await ws.send(_ask("ok"))
        assert (await collect_answer(ws))[-1]["type"] == "text"


async def test_a_flood_is_refused_politely_and_nothing_accepted_is_lost(start_server, scripted_engine) -> None:
    scripted_engine.delay = 0.05
    server = start_server(ws_max_pending_turns=3)
    with server.client() as api:
        session = new_session(api, new_tutor(api)["id"])
    async with websockets.connect(ws_url(session)) as ws:
        for i in range(30):
            await ws.send(_ask(f"q{i}"))
        finals, busy = [], 0
        while len(finals) + busy < 30:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message["type"] == "text":
                finals.append(message["content"])
            elif message["type"] == "error":
                assert message["code"] == "too_busy"
                busy += 1
        assert busy > 0 and len(finals) >= 3
        asked = [int(f.rsplit("q", 1)[1]) for f in finals]
        assert asked == sorted(asked)  # accepted turns are answered in order


async def test_disconnect_mid_answer_cancels_generation_and_keeps_the_partial(start_server, scripted_engine) -> None:
    scripted_engine.delay = 0.2
    server = start_server()
    with server.client() as api:
        session = new_session(api, new_tutor(api)["id"])
        async with websockets.connect(ws_url(session)) as ws:
            await ws.send(_ask("a long question"))
            first = json.loads(await ws.recv())
            assert first["type"] == "text_delta"
        for _ in range(50):
            history = server.services.conversation.history(session["session_id"], "")
            if scripted_engine.engine.cancelled and len(history) == 2:
                break
            await asyncio.sleep(0.05)
        assert scripted_engine.engine.cancelled == 1
        assert [m.role for m in history] == ["user", "assistant"]
        assert history[1].content and history[1].content in "[Ada|0] a long question"
        # The session and the server carry on.
        async with websockets.connect(ws_url(session)) as ws:
            await ws.send(_ask("again"))
            assert (await collect_answer(ws))[-1]["content"] == "[Ada|1] again"


async def test_many_sessions_never_cross(start_server) -> None:
    server = start_server(max_sessions=20)
    with server.client() as api:
        tutors = [new_tutor(api, f"T{i}") for i in range(4)]
        sessions = [new_session(api, tutors[i % 4]["id"], student_id=i) for i in range(20)]

    async def converse(index: int, session: dict) -> None:
        async with websockets.connect(ws_url(session)) as ws:
            for turn in range(5):
                await ws.send(_ask(f"s{index}-t{turn}"))
                final = (await collect_answer(ws))[-1]
                assert final["content"] == f"[T{index % 4}|{turn}] s{index}-t{turn}"
                assert final["engine_session_id"] == session["session_id"]

    await asyncio.gather(*(converse(i, s) for i, s in enumerate(sessions)))
