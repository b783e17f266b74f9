"""Which engine serves each stage, and whether it is ready.

Engines warm up in the background so the server answers `/health` at once; `/health` and the
UI read the states kept here, so a slow, failed or fallback engine is always visible.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

WARMING = "warming"
READY = "ready"
FAILED = "failed"


class Warmable(Protocol):
    name: str
    description: str

    def warmup(self) -> None: ...


@dataclass
class StageState:
    engine: str
    description: str
    state: str = WARMING
    detail: str = ""
    fallback: bool = False

    @property
    def ready(self) -> bool:
        return self.state == READY

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ready": self.ready}


class EngineHub:
    """The engines chosen for this process, one per stage."""

    def __init__(self) -> None:
        self.engines: dict[str, Any] = {}
        self.states: dict[str, StageState] = {}

    def add(self, stage: str, engine: Warmable, *, fallback: bool = False, detail: str = "") -> None:
        self.engines[stage] = engine
        self.states[stage] = StageState(engine.name, engine.description, detail=detail, fallback=fallback)

    def get(self, stage: str) -> Any:
        return self.engines[stage]

    async def warm_all(self) -> None:
        await asyncio.gather(*(self._warm(stage) for stage in self.engines))

    async def _warm(self, stage: str) -> None:
        state = self.states[stage]
        try:
            await asyncio.to_thread(self.engines[stage].warmup)
        except Exception as exc:  # a failed engine is reported, never fatal to the server
            log.error("%s engine %s failed to warm up: %s", stage, state.engine, exc)
            state.state, state.detail = FAILED, str(exc)
        else:
            state.state = READY
            log.info("%s engine ready: %s", stage, state.description)

    def summary(self) -> dict[str, Any]:
        return {
            "engines": {stage: s.engine for stage, s in self.states.items()},
            "stages": {stage: s.to_dict() for stage, s in self.states.items()},
            "ready": all(s.ready for s in self.states.values()),
        }
