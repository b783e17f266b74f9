"""Prometheus metrics through the standard client library, served at `GET /metrics`: sessions,
sockets and calls now; turns and how they ended; each stage's latency; fallbacks; TURN relays;
errors that reached a student.

Each app has its own registry, so several servers in one process (the tests) count apart.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds: a sentence's voice or video takes tens of milliseconds, a question's transcription
# or an answer's first token up to seconds on two cores.
_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.turns = Counter("tutor_turns", "Turns, by how they ended", ["outcome"], registry=registry)
        self.stage_seconds = Histogram(
            "tutor_stage_seconds",
            "Per stage: asr a question, llm to the first token, tts and lipsync a sentence",
            ["stage"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.fallbacks = Counter("tutor_fallbacks", "Answers a fallback served, by notice", ["code"], registry=registry)
        self.errors = Counter("tutor_errors", "Turns that ended in an error, by code", ["code"], registry=registry)
        self.relays = Counter("tutor_turn_relays", "Calls' TURN relays, by result", ["result"], registry=registry)

    def watch(self, name: str, description: str, read: Callable[[], float]) -> None:
        """A gauge read when Prometheus scrapes (the number of active sessions, …)."""
        Gauge(name, description, registry=self.registry).set_function(read)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
