"""Shared benchmark plumbing: a server subprocess, percentiles, and the table + JSON report."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.kit.live import free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def latency_summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "n": len(values_ms),
        "p50_ms": round(percentile(values_ms, 50), 2),
        "p95_ms": round(percentile(values_ms, 95), 2),
        "p99_ms": round(percentile(values_ms, 99), 2),
        "mean_ms": round(statistics.fmean(values_ms), 2) if values_ms else float("nan"),
    }


class ServerProcess:
    """The app in its own process, as in production; `scripted=True` swaps in the instant engine."""

    def __init__(self, scripted: bool, **env: str) -> None:
        self.port = free_port()
        self.data = tempfile.mkdtemp(prefix="vt-bench-")
        self.env = {
            **os.environ,
            "DATA_DIR": self.data,
            "MANAGEMENT_API_PORT": str(self.port),
            "HF_HUB_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
            **env,
        }
        script = [sys.executable, "-m", "bench.scripted_server"] if scripted else [sys.executable, str(ROOT / "app.py")]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(script, cwd=self.data, env=self.env)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, budget: float = 60) -> float:
        while time.perf_counter() - self.started < budget:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited during start-up")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"no /health within {budget}s")

    def wait_ready(self, budget: float = 60) -> None:
        """Healthy, and every engine warmed up (`/health` says `ready`)."""
        self.wait_healthy(budget)
        for _ in range(600):
            if httpx.get(f"{self.url}/health").json()["ready"]:
                return
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def report(name: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
    """Print `rows` as a table and write them, with the machine's facts, as JSON."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print(" | ".join(c.ljust(widths[c]) for c in columns))
    print("-+-".join("-" * widths[c] for c in columns))
    for row in rows:
        print(" | ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "rows": rows,
        **(extra or {}),
    }
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False))
    print(f"\nwritten: {path.relative_to(ROOT)}")
    return path


class RawHTTP:
    """A minimal keep-alive HTTP/1.1 JSON client over asyncio streams.

    httpx costs the benchmark client ~2.5 ms of CPU per request; on a 2-core machine that
    steals the server's second core. This one costs a fraction, so the numbers measure the
    server, not the load generator.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: Any = None
        self._writer: Any = None

    async def connect(self) -> RawHTTP:
        import asyncio

        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        self._writer.write(head + payload)
        status_line = await self._reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        data = await self._reader.readexactly(length) if length else b""
        return status, json.loads(data) if data else None

    async def close(self) -> None:
        self._writer.close()
