"""Which engine serves each stage, and whether it is ready.

Engines warm up in the background so the server answers `/health` at once. The engine's name,
description and fallback flag are read live from the engine itself, so when a composite engine
switches to its fallback (Ollama down → local model), `/health` and the UI say so at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

WARMING = "warming"
READY = "ready"
FAILED = "failed"


class Warmable(Protocol):
    name: str
    description: str

    def warmup(self) -> None: ...


class Outage:
    """A primary engine's outage: since when, why, and whether it is time to try it again.
    While it lasts, turns go straight to the fallback; every `probe_seconds` one tries the
    primary first."""

    def __init__(self, probe_seconds: float) -> None:
        self.probe_seconds = probe_seconds
        self.since: float | None = None
        self.reason = ""
        self._last_try = 0.0

    @property
    def active(self) -> bool:
        return self.since is not None

    def down(self, exc: Exception) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        self._last_try = now
        self.reason = str(exc)

    def up(self) -> None:
        self.since = None
        self.reason = ""

    def retry_due(self) -> bool:
        return time.monotonic() - self._last_try >= self.probe_seconds


class Composite:
    """A stage engine made of a primary and a fallback: it shows the one serving now, so
    `/health` names the fallback the moment it takes over."""

    primary: Any
    fallback: Any
    fallback_active: bool

    @property
    def _current(self) -> Any:
        return self.fallback if self.fallback_active else self.primary

    @property
    def name(self) -> str:
        return self._current.name

    @property
    def description(self) -> str:
        return self._current.description


@dataclass
class StageState:
    state: str = WARMING
    detail: str = ""


class EngineHub:
    """The engines chosen for this process, one per stage."""

    def __init__(self) -> None:
        self.engines: dict[str, Any] = {}
        self.states: dict[str, StageState] = {}

    def add(self, stage: str, engine: Warmable) -> None:
        self.engines[stage] = engine
        self.states[stage] = StageState()

    def get(self, stage: str) -> Any:
        return self.engines[stage]

    async def warm_all(self) -> None:
        await asyncio.gather(*(self._warm(stage) for stage in self.engines))

    async def _warm(self, stage: str) -> None:
        state, engine = self.states[stage], self.engines[stage]
        try:
            await asyncio.to_thread(engine.warmup)
        except Exception as exc:  # a failed engine is reported, never fatal to the server
            log.error("%s engine %s failed to warm up: %s", stage, engine.name, exc)
            state.state, state.detail = FAILED, str(exc)
        else:
            state.state = READY
            log.info("%s engine ready: %s", stage, engine.description)

    def stage(self, stage: str) -> dict[str, Any]:
        engine, state = self.engines[stage], self.states[stage]
        detail = getattr(engine, "status_detail", "") or state.detail
        return {
            "engine": engine.name,
            "description": engine.description,
            "state": state.state,
            "ready": state.state == READY,
            "fallback": bool(getattr(engine, "fallback_active", False)),
            "detail": detail,
        }

    def summary(self) -> dict[str, Any]:
        stages = {name: self.stage(name) for name in self.engines}
        return {
            "engines": {name: s["engine"] for name, s in stages.items()},
            "stages": stages,
            "ready": all(s["ready"] for s in stages.values()),
        }
