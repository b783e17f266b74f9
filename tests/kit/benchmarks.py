"""A benchmark run as `python -m bench.<module>` from the repository root, for the tests that
keep each one from rotting: its exit status checked, its JSON read and removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(module: str, args: list[str], name: str) -> dict[str, Any]:
    """Run `bench.<module>` with `args` plus `--name <name>`; what it wrote to bench/results."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args, "--name", name],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    written = ROOT / "bench" / "results" / f"{name}.json"
    result = json.loads(written.read_text())
    written.unlink()
    return result
