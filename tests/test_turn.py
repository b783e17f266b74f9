"""TURN: credentials checked by a real coturn on loopback, its configuration, and the
`/v1/webrtc/config` route."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioice.stun import TransactionFailed

from tests.kit.calls import loopback_coturn
from turn import credentials
from turn.coturn import CoturnConfig

SECRET = "a-shared-turn-secret"


@pytest.fixture(scope="module")
def coturn() -> Iterator[CoturnConfig]:
    with loopback_coturn(SECRET) as turn:
        yield turn.config


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)


async def _allocate(config: CoturnConfig, username: str, password: str) -> tuple[str, int]:
    from aioice.turn import create_turn_endpoint

    server = ("127.0.0.1", config.listening_port)
    try:
        transport, client = await asyncio.wait_for(create_turn_endpoint(_Client, server, username, password), 10)
    except TransactionFailed:
        # Once more, from a new port: the kernel may hand out the port of a client released a
        # moment ago, whose session coturn is still closing (a refusal that lasts is refused again).
        transport, client = await asyncio.wait_for(create_turn_endpoint(_Client, server, username, password), 10)
    try:
        return transport.get_extra_info("sockname")
    finally:
        transport.close()  # deallocates (a Refresh with lifetime 0), then reports connection_lost
        await asyncio.wait_for(client.closed, 10)


async def test_fresh_credentials_get_a_relay_port(coturn: CoturnConfig) -> None:
    issued = credentials.issue(SECRET, 300, "student-1")
    host, port = await _allocate(coturn, issued.username, issued.credential)
    assert host == "127.0.0.1" and coturn.min_port <= port <= coturn.max_port


@pytest.mark.parametrize(
    "make",
    [
        lambda: credentials.issue(SECRET, 300, "late", now=time.time() - 3600),  # expired an hour ago
        lambda: credentials.issue("not-the-secret", 300, "forger"),  # signed with another secret
    ],
)
async def test_expired_or_forged_credentials_are_refused(coturn: CoturnConfig, make) -> None:
    issued = make()
    with pytest.raises(TransactionFailed) as caught:
        await _allocate(coturn, issued.username, issued.credential)
    assert caught.value.response.attributes["ERROR-CODE"][0] == 401, caught.value


async def test_released_allocations_free_their_ports_for_the_next_sessions(coturn: CoturnConfig) -> None:
    from aioice.turn import create_turn_endpoint

    server = ("127.0.0.1", coturn.listening_port)
    await asyncio.sleep(1.0)  # ports the other tests just released come back first
    held = []
    for n in range(5):  # the whole 5-port range, held open
        issued = credentials.issue(SECRET, 300, f"holder{n}")
        held.append((await create_turn_endpoint(_Client, server, issued.username, issued.credential))[0])
    issued = credentials.issue(SECRET, 300, "one-too-many")
    with pytest.raises(TransactionFailed) as caught:  # the range is really that small
        await _allocate(coturn, issued.username, issued.credential)
    assert caught.value.response.attributes["ERROR-CODE"][0] == 508, caught.value
    for transport in held:
        transport.close()
    await asyncio.sleep(1.0)  # coturn frees a released port within about a second
    # Released allocations come back: three times round the range, one session after another
    # (a real session lasts longer than the 0.3 s between these).
    ports = []
    for n in range(15):
        issued = credentials.issue(SECRET, 300, f"s{n}")
        ports.append((await _allocate(coturn, issued.username, issued.credential))[1])
        await asyncio.sleep(0.3)
    assert all(coturn.min_port <= port <= coturn.max_port for port in ports)
    assert len(set(ports)) >= 3, ports  # the range is used round, not one port held


async def _allocate_from(config: CoturnConfig, local_port: int, name: str) -> tuple[str, int]:
    """Allocate from a given local port (the kernel hands a closed socket's port to a new one)."""
    from aioice.turn import DEFAULT_CHANNEL_REFRESH_TIME, TurnClientUdpProtocol

    issued = credentials.issue(SECRET, 300, name)
    server = ("127.0.0.1", config.listening_port)
    transport, client = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: TurnClientUdpProtocol(
            server, issued.username, issued.credential, lifetime=60, channel_refresh_time=DEFAULT_CHANNEL_REFRESH_TIME
        ),
        local_addr=("127.0.0.1", local_port),
        remote_addr=server,
    )
    try:
        relayed = await asyncio.wait_for(client.connect(), 10)
        await client.delete()
        return relayed
    finally:
        transport.close()


async def test_a_refused_client_leaves_nothing_in_the_way_of_the_next_one_on_its_port(coturn: CoturnConfig) -> None:
    """A refusal (508, the range full) leaves a session keyed by the client's address. A new
    socket on that port, with new credentials, met the old session's (437, signed with a key it
    does not have) and waited out its whole gathering for a minute, coturn's default: the
    config's max-allocate-timeout clears such sessions in seconds."""
    from aioice.turn import create_turn_endpoint

    await asyncio.sleep(1.0)  # ports the other tests just released come back first
    held = []
    for n in range(5):
        issued = credentials.issue(SECRET, 300, f"full{n}")
        server = ("127.0.0.1", coturn.listening_port)
        held.append((await create_turn_endpoint(_Client, server, issued.username, issued.credential))[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # a free UDP port, for the client
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:
        with pytest.raises(TransactionFailed) as caught:
            await _allocate_from(coturn, port, "refused")
        assert caught.value.response.attributes["ERROR-CODE"][0] == 508
    finally:
        for transport in held:
            transport.close()
    await asyncio.sleep(coturn.max_allocate_timeout + 2)
    host, relayed = await _allocate_from(coturn, port, "next-student")
    assert coturn.min_port <= relayed <= coturn.max_port


class _Echo(asyncio.DatagramProtocol):
    """A peer beyond the relay that answers every datagram."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"pong " + data, addr)  # type: ignore[attr-defined]


class _Relayed(_Client):
    def __init__(self) -> None:
        super().__init__()
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)


async def test_a_call_outlives_its_credentials_but_they_open_no_new_relay() -> None:
    """Why a call longer than TURN_TTL_SECONDS keeps its relay: coturn checks a REST
    credential's expiry when an allocation is made, not when a live one is refreshed. Here the
    credentials expire after 2 s and the allocation lives 6 s: media still flows both ways at
    12 s (so the refresh after expiry was accepted), while a new allocation with the same
    credentials is refused. Nothing needs refreshing mid-call; the TTL only bounds how long a
    handed-out credential can start a relay."""
    from aioice.turn import create_turn_endpoint

    with loopback_coturn(SECRET, max_allocate_lifetime=6) as turn:
        server = ("127.0.0.1", turn.config.listening_port)
        loop = asyncio.get_running_loop()
        echo, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
        issued = credentials.issue(SECRET, 2, "long-call")
        transport, relayed = await create_turn_endpoint(
            _Relayed, server, issued.username, issued.credential, lifetime=6
        )
        try:
            for n in range(7):  # 14 s: past the credentials' expiry, and the first allocation's
                transport.sendto(b"%d" % n, echo.get_extra_info("sockname"))
                await asyncio.sleep(2)
            assert not relayed.closed.done(), "the allocation was dropped"
            assert relayed.received[-1] == b"pong 6" and len(relayed.received) == 7, relayed.received
            with pytest.raises(TransactionFailed) as caught:
                await _allocate(turn.config, issued.username, issued.credential)
            assert caught.value.response.attributes["ERROR-CODE"][0] == 401
        finally:
            transport.close()
            echo.close()


def test_production_config_keeps_relays_off_private_networks() -> None:
    production = CoturnConfig(secret=SECRET, external_ip="203.0.113.7").render()
    assert "use-auth-secret" in production and "max-allocate-lifetime=120" in production
    assert "allow-loopback-peers" not in production and "denied-peer-ip=127.0.0.0-127.255.255.255" in production
    assert "external-ip=203.0.113.7" in production and "no-cli" in production
    assert "allow-loopback-peers" in CoturnConfig(secret=SECRET, loopback_for_tests=True).render()


def test_the_cli_writes_a_private_config(tmp_path: Path) -> None:
    target = tmp_path / "turnserver.conf"
    root = str(Path(__file__).resolve().parents[1])  # run from tmp_path: no developer's .env
    env = {
        **os.environ,
        "PYTHONPATH": root,
        "TURN_SECRET": SECRET,
        "WEBRTC_PORT_MIN": "40000",
        "WEBRTC_PORT_MAX": "40009",
    }
    done = subprocess.run(
        [sys.executable, "-m", "turn.coturn", "write", str(target)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    text = target.read_text()
    assert f"static-auth-secret={SECRET}" in text and "min-port=40000" in text and "max-port=40009" in text
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    missing = subprocess.run(
        [sys.executable, "-m", "turn.coturn", "write", str(target)],
        env={k: v for k, v in env.items() if k != "TURN_SECRET"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert missing.returncode == 2 and "TURN_SECRET" in missing.stderr


async def test_webrtc_config_hands_out_working_short_lived_credentials(start_server, coturn: CoturnConfig) -> None:
    unconfigured = start_server()
    with unconfigured.client() as api:
        refused = api.get("/v1/webrtc/config")
    assert refused.status_code == 503 and "TURN_SECRET" in refused.json()["detail"]
    server = start_server(
        turn_secret=SECRET,
        turn_ttl_seconds=300,
        webrtc_turn_server=f"turn:127.0.0.1:{coturn.listening_port}",
        management_api_key="k" * 24,
    )
    with server.client() as anonymous:
        assert anonymous.get("/v1/webrtc/config").status_code == 401
    with server.client("k" * 24) as api:
        body = api.get("/api/webrtc/config").json()
    assert body["iceTransportPolicy"] == "relay" and abs(body["expires_at"] - time.time() - 300) < 5
    (turn,) = body["iceServers"]
    assert turn["urls"] == [f"turn:127.0.0.1:{coturn.listening_port}"]
    await _allocate(coturn, turn["username"], turn["credential"])
    assert SECRET not in str(body)
