"""coturn for a deployment or a local run: its configuration, and the process.

Relay-only WebRTC sends every packet through coturn, so its port range is the only UDP the
GPU box exposes. Each live session holds about two relay ports (the browser's allocation and
the server's); `max-allocate-lifetime` bounds how long a vanished peer's allocation keeps
its port, which with a small range is the difference between working and "no available
ports". `allow-loopback-peers` is for tests on one machine only: in production it would let
clients relay into the server's own loopback services.

    python -m turn.coturn write turnserver.conf   # from the settings (TURN_SECRET, ...)
    python -m turn.coturn run                     # write a private config and run coturn
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import EngineUnavailable
from app.core.settings import Settings


@dataclass(frozen=True)
class CoturnConfig:
    secret: str
    listening_port: int = 3478
    listening_ip: str = "0.0.0.0"
    relay_ip: str | None = None
    external_ip: str | None = None  # the public address, when coturn sits behind NAT or in a container
    min_port: int = 49160
    max_port: int = 49200
    realm: str = "virtual-tutor"
    max_allocate_lifetime: int = 120
    # A client whose allocation failed (a full range's 508) leaves a session keyed by its
    # address; a new socket that the kernel gives the same port meets that session's old
    # credentials (437, unsigned for it) and waits out its whole gathering timeout. coturn's
    # own default keeps such sessions 60 s.
    max_allocate_timeout: int = 10
    loopback_for_tests: bool = False

    def render(self) -> str:
        lines = [
            "# Written by Virtual Tutor (python -m turn.coturn write): relay-only WebRTC.",
            f"listening-port={self.listening_port}",
            f"listening-ip={self.listening_ip}",
            f"min-port={self.min_port}",
            f"max-port={self.max_port}",
            "use-auth-secret",
            f"static-auth-secret={self.secret}",
            f"realm={self.realm}",
            "fingerprint",
            # A vanished peer frees its relay port after this long, whatever lifetime it asked.
            f"max-allocate-lifetime={self.max_allocate_lifetime}",
            f"max-allocate-timeout={self.max_allocate_timeout}",
            "no-multicast-peers",
            "no-tls",
            "no-dtls",
            "no-cli",
            "log-file=stdout",
            "simple-log",
        ]
        if self.relay_ip:
            lines.append(f"relay-ip={self.relay_ip}")
        if self.external_ip:
            lines.append(f"external-ip={self.external_ip}")
        if self.loopback_for_tests:
            lines.append("allow-loopback-peers")  # tests only: peers on 127.0.0.1
        else:
            # Never relay into the server's own private networks.
            for block in (
                "0.0.0.0-0.255.255.255",
                "10.0.0.0-10.255.255.255",
                "127.0.0.0-127.255.255.255",
                "169.254.0.0-169.254.255.255",
                "172.16.0.0-172.31.255.255",
                "192.168.0.0-192.168.255.255",
            ):
                lines.append(f"denied-peer-ip={block}")
        return "\n".join(lines) + "\n"


class Coturn:
    """A coturn process with a given configuration (`with Coturn(config) as turn: ...`)."""

    def __init__(self, config: CoturnConfig, binary: str = "turnserver") -> None:
        self.config = config
        self.binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None

    def start(self, timeout: float = 10) -> Coturn:
        path = shutil.which(self.binary)
        if path is None:
            raise EngineUnavailable(f"{self.binary} is not installed (apt-get install coturn)")
        self._folder = tempfile.TemporaryDirectory(prefix="coturn-")
        conf = Path(self._folder.name) / "turnserver.conf"
        conf.write_text(self.config.render())
        conf.chmod(0o600)  # it holds the secret
        self._proc = subprocess.Popen(
            [path, "-c", str(conf), "--pidfile", str(Path(self._folder.name) / "turnserver.pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        host = "127.0.0.1" if self.config.listening_ip in ("0.0.0.0", "127.0.0.1") else self.config.listening_ip
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EngineUnavailable(f"coturn exited at start (code {self._proc.returncode}); is the port taken?")
            with socket.socket() as probe:  # coturn listens on TCP too once it is up
                if probe.connect_ex((host, self.config.listening_port)) == 0:
                    return self
            time.sleep(0.05)
        self.stop()
        raise EngineUnavailable(f"coturn did not start listening within {timeout:g} s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def wait(self) -> None:
        if self._proc is not None:
            self._proc.wait()

    def __enter__(self) -> Coturn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def from_settings(settings: Settings) -> CoturnConfig:
    if settings.turn_secret is None:
        raise EngineUnavailable("TURN_SECRET is not set: coturn and the server must share it")
    return CoturnConfig(
        secret=settings.turn_secret.get_secret_value(),
        listening_port=settings.turn_port,
        external_ip=settings.webrtc_public_ip,
        min_port=settings.webrtc_port_min,
        max_port=settings.webrtc_port_max,
        max_allocate_lifetime=settings.turn_max_allocate_lifetime,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m turn.coturn", description="coturn for Virtual Tutor")
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write turnserver.conf from the settings")
    write.add_argument("path", type=Path)
    commands.add_parser("run", help="run coturn in the foreground with the settings' configuration")
    args = parser.parse_args(argv)
    try:
        config = from_settings(Settings())
    except EngineUnavailable as exc:
        print(exc.message, file=sys.stderr)
        return 2
    if args.command == "write":
        args.path.write_text(config.render())
        args.path.chmod(0o600)
        print(f"wrote {args.path} (relay ports {config.min_port}-{config.max_port}, UDP/TCP {config.listening_port})")
        return 0
    with Coturn(config) as running:
        print(f"coturn listening on {config.listening_port}; Ctrl-C stops it")
        try:
            running.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
