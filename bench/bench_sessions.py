"""Session create + delete throughput and latency against `python app.py` (embedded default).

    python -m bench.bench_sessions [--pairs 1500] [--concurrency 8]

Target (issue #2): >= 300 requests/s and p99 <= 50 ms on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx

from bench.common import RawHTTP, ServerProcess, latency_summary, report


async def run(server: ServerProcess, pairs: int, concurrency: int) -> tuple[dict[str, list[float]], float, int]:
    latencies: dict[str, list[float]] = {"create": [], "delete": []}
    failures = 0
    setup = await RawHTTP("127.0.0.1", server.port).connect()
    _, tutor = await setup.request("POST", "/v1/tutors", {"name": "Bench"})
    await setup.close()
    remaining = pairs

    async def worker() -> None:
        nonlocal failures, remaining
        client = await RawHTTP("127.0.0.1", server.port).connect()
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            status, created = await client.request("POST", "/v1/sessions", {"tutor_id": tutor["id"], "student_id": 1})
            t1 = time.perf_counter()
            if status != 201:
                failures += 1
                continue
            status, _ = await client.request("DELETE", f"/v1/sessions/{created['session_id']}")
            t2 = time.perf_counter()
            failures += status != 200
            latencies["create"].append((t1 - t0) * 1000)
            latencies["delete"].append((t2 - t1) * 1000)
        await client.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started, failures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    server = ServerProcess(scripted=False, MAX_SESSIONS="1000")
    rows = []
    try:
        server.wait_healthy()
        while not httpx.get(f"{server.url}/health").json()["ready"]:
            time.sleep(0.1)  # let the embedded model finish warming, as in steady state
        asyncio.run(run(server, 100, 4))  # warm-up
        for concurrency in args.concurrency:
            latencies, elapsed, failures = asyncio.run(run(server, args.pairs, concurrency))
            summary = latency_summary(latencies["create"] + latencies["delete"])
            throughput = 2 * args.pairs / elapsed
            rows.append(
                {
                    "concurrency": concurrency,
                    "requests": 2 * args.pairs,
                    "failures": failures,
                    "req_per_s": round(throughput, 1),
                    "create_p99_ms": latency_summary(latencies["create"])["p99_ms"],
                    "delete_p99_ms": latency_summary(latencies["delete"])["p99_ms"],
                    **summary,
                    "meets_target": throughput >= 300 and summary["p99_ms"] <= 50 and failures == 0,
                }
            )
    finally:
        server.stop()
    report("sessions", rows, {"target": ">= 300 req/s with p99 <= 50 ms", "server": "python app.py, embedded default"})


if __name__ == "__main__":
    main()
