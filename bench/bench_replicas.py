"""Two replicas on one PostgreSQL against one box on SQLite, side by side in the same run.

    python -m bench.bench_replicas [--students 300] [--concurrency 8]

Each student is what the web backend and a browser do: `POST /v1/sessions` (spread over the
replicas in turn, as a balancer would), the WebSocket to the `engine_url` it got, one text turn,
then `DELETE` — on the *other* replica, so every end crosses boxes (LISTEN/NOTIFY). The LLM is
the instant scripted engine: what is measured is the service (state, routing, events), not a
model. On one small machine the replicas and PostgreSQL share its cores, so this measures what
coordination costs, not how far more boxes scale.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time

import websockets

from bench.common import RawHTTP, ServerProcess, latency_summary, report
from tests.kit.servers import running_postgres

QUIET = {"ENABLE_ASR": "false", "ENABLE_TTS": "false", "ENABLE_AVATAR": "false", "MAX_SESSIONS": "1000"}


async def students(boxes: list[ServerProcess], count: int, concurrency: int) -> dict:
    setup = await RawHTTP("127.0.0.1", boxes[0].port).connect()
    _, tutor = await setup.request("POST", "/v1/tutors", {"name": "Bench"})
    await setup.close()
    latencies: dict[str, list[float]] = {"create": [], "turn": [], "delete": [], "student": []}
    failures = 0
    turns = itertools.count()  # shared: each student is taken once

    async def worker() -> None:
        nonlocal failures
        clients = [await RawHTTP("127.0.0.1", box.port).connect() for box in boxes]
        while (n := next(turns)) < count:
            here, there = clients[n % len(clients)], clients[(n + 1) % len(clients)]
            t0 = time.perf_counter()
            status, created = await here.request("POST", "/v1/sessions", {"tutor_id": tutor["id"], "student_id": n})
            t1 = time.perf_counter()
            if status != 201:
                failures += 1
                continue
            url = f"{created['engine_url']}?token={created['engine_token']}"
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"type": "text", "content": f"q{n}"}))
                while (message := json.loads(await ws.recv()))["type"] not in ("text", "error"):
                    pass
                failures += message["type"] == "error"
            t2 = time.perf_counter()
            status, _ = await there.request("DELETE", f"/v1/sessions/{created['session_id']}")
            t3 = time.perf_counter()
            failures += status != 200
            for name, value in (("create", t1 - t0), ("turn", t2 - t1), ("delete", t3 - t2), ("student", t3 - t0)):
                latencies[name].append(value * 1000)
        for client in clients:
            await client.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"latencies": latencies, "elapsed": elapsed, "failures": failures}


def row(setup: str, boxes: int, concurrency: int, result: dict) -> dict:
    done = len(result["latencies"]["student"])
    summary = {name: latency_summary(values) for name, values in result["latencies"].items()}
    return {
        "setup": setup,
        "replicas": boxes,
        "concurrency": concurrency,
        "students": done,
        "students/s": round(done / result["elapsed"], 1),
        "req/s": round(3 * done / result["elapsed"], 1),  # create + WebSocket turn + delete
        "create p99 ms": summary["create"]["p99_ms"],
        "turn p99 ms": summary["turn"]["p99_ms"],
        "delete p99 ms": summary["delete"]["p99_ms"],
        "student p50 ms": summary["student"]["p50_ms"],
        "student p99 ms": summary["student"]["p99_ms"],
        "failures": result["failures"],
    }


def measure(setup: str, boxes: list[ServerProcess], args: argparse.Namespace) -> list[dict]:
    try:
        for box in boxes:
            box.wait_ready()
        asyncio.run(students(boxes, 20, 2))  # warm the connections and caches
        return [row(setup, len(boxes), c, asyncio.run(students(boxes, args.students, c))) for c in args.concurrency]
    finally:
        for box in boxes:
            box.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    rows = measure("one box, SQLite", [ServerProcess(scripted=True, **QUIET)], args)
    with running_postgres() as postgres:
        database = postgres.new_database()
        boxes = [ServerProcess(scripted=True, DATABASE_URL=database, REPLICA_NAME=name, **QUIET) for name in ("a", "b")]
        rows += measure("two replicas, one PostgreSQL", boxes, args)
    report("replicas", rows)


if __name__ == "__main__":
    main()
