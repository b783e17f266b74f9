"""Time from `python app.py` (embedded default, fresh data directory) to `/health` 200, and to
every engine reporting ready.

    python -m bench.bench_startup [--runs 3]

Target (issue #2): /health 200 within 15 s; engines may still be warming then.
"""

from __future__ import annotations

import argparse
import time

import httpx

from bench.common import ServerProcess, report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for run in range(1, args.runs + 1):
        server = ServerProcess(scripted=False)
        try:
            healthy = server.wait_healthy()
            while not httpx.get(f"{server.url}/health").json()["ready"]:
                time.sleep(0.05)
            ready = time.perf_counter() - server.started
            engines = httpx.get(f"{server.url}/health").json()["engines"]
        finally:
            server.stop()
        rows.append(
            {
                "run": run,
                "health_200_s": round(healthy, 2),
                "all_engines_ready_s": round(ready, 2),
                "engines": ",".join(f"{k}={v}" for k, v in engines.items()),
                "meets_target": healthy <= 15,
            }
        )
    report("startup", rows, {"target": "/health 200 within 15 s of `python app.py`"})


if __name__ == "__main__":
    main()
