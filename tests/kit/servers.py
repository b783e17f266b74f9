"""Real servers the replicas share, started for the tests on loopback: a Chroma server (the
`chroma` CLI from the chromadb wheel) and PostgreSQL.

PostgreSQL is Debian's server: a cluster made by `initdb` in a temporary folder, one fresh
database per test. It refuses to run as root, so under root (CI's containers) it runs as the
`postgres` user Debian's package creates, in a folder that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.kit.live import free_port


@contextlib.contextmanager
def running_chroma(folder: Path) -> Iterator[int]:
    """A Chroma server storing under `folder`; yields its port."""
    port = free_port()
    cli = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    proc = subprocess.Popen(
        [cli, "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "chroma server did not start"
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    if not versions:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (make system-deps installs postgresql)")
    return versions[-1]


@dataclass
class Postgres:
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database's URL, as an operator writes DATABASE_URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    folder = Path(tempfile.mkdtemp(prefix="tutor-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "check": True}
    subprocess.run([*as_user, _bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"], **quiet)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    pg_ctl = [*as_user, _bin("pg_ctl"), "-D", str(data), "-l", str(folder / "server.log")]
    subprocess.run([*pg_ctl, "-o", options, "-w", "-t", "60", "start"], **quiet)
    try:
        yield Postgres(port)
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(folder, ignore_errors=True)
