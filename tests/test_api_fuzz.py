"""The whole management API under a schema fuzzer: schemathesis (its CLI, every phase — the
schema's examples, boundary coverage, random fuzzing and stateful sequences) generates
requests from `/openapi.json`, valid and not, with a fixed seed, against a real server with an
API key. It fails on any 5xx, any response the schema does not describe (status, body or
content type), a malformed request accepted, or a bad key let through.

Left out, with reason: `unsupported_method` and `allow_header_conformance` (Starlette's 405
names in `Allow` only the methods of the route it matched first; no client reads it),
`positive_data_acceptance` (a valid request naming a tutor or teacher that does not exist is
rightly refused) and `use_after_free` (`DELETE /v1/sessions/{id}` ends a session, as the
contract says; its record and transcript stay readable). `schemathesis.toml` beside this file
turns off `negative_data_rejection` for file uploads, whose bytes may be anything.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kit.live import LiveServer

KEY = "fuzz-key-" + "k" * 24
SEED = 20261202


@pytest.fixture
def fuzzed(start_server, tmp_path: Path) -> LiveServer:
    (tmp_path / "imports").mkdir()
    return start_server(
        management_api_key=KEY,
        avatar_import_dir=tmp_path / "imports",
        turn_secret="fuzz-secret",
        webrtc_turn_server="turn:127.0.0.1:3478",
    )


def test_the_api_answers_every_generated_request_as_its_schema_says(fuzzed: LiveServer, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is in requirements-dev.txt"
    done = subprocess.run(
        [
            st,
            "--config-file",
            str(Path(__file__).with_name("schemathesis.toml")),
            "run",
            f"{fuzzed.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {KEY}",
            "--seed",
            str(SEED),
            "--max-examples",
            "40",
            "--exclude-checks",
            "unsupported_method,allow_header_conformance,positive_data_acceptance,use_after_free",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-12_000:]
    assert "Tested: " in done.stdout and "Fuzzing" in done.stdout
