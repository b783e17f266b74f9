"""Engines of one kind by name: each stage's setting (`LLM_ENGINE`, `TTS_ENGINE`, ...) picks
one; tests and benchmarks register scripted ones under names of their own."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from app.core.errors import InvalidInput
from app.core.settings import Settings

T = TypeVar("T")
Factory = Callable[[Settings], T]


class Registry(Generic[T]):
    def __init__(self, setting: str, factories: Mapping[str, Factory[T]]) -> None:
        self.setting = setting  # the environment variable that names the engine
        self._factories = dict(factories)

    def register(self, name: str, factory: Factory[T]) -> None:
        self._factories[name] = factory

    def unregister(self, name: str) -> None:
        self._factories.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, settings: Settings) -> T:
        """The engine the settings name, made from the settings."""
        name = getattr(settings, self.setting.lower())
        factory = self._factories.get(name)
        if factory is None:
            raise InvalidInput(f"unknown {self.setting} {name!r}; choose one of: {', '.join(self.names())}")
        return factory(settings)
