"""LLM engines by name: a small registry the settings pick from.

Tests and benchmarks register scripted engines here too (`register("scripted", factory)`).
"""

from __future__ import annotations

from collections.abc import Callable

from app.errors import InvalidInput
from app.settings import Settings
from tutors.llm.base import ChatMessage, GenerationOptions, LLMEngine

__all__ = ["ChatMessage", "GenerationOptions", "LLMEngine", "create", "names", "register", "unregister"]

Factory = Callable[[Settings], LLMEngine]


def _local(settings: Settings) -> LLMEngine:
    from tutors.llm.local import LocalLLM

    return LocalLLM(settings.local_llm_model_path, settings.local_llm_context)


_FACTORIES: dict[str, Factory] = {"local": _local}
# What "auto" means today: the best engine that can run here. With no LLM server engine yet,
# that is the embedded model.
_AUTO_ORDER = ("local",)


def register(name: str, factory: Factory) -> None:
    _FACTORIES[name] = factory


def unregister(name: str) -> None:
    _FACTORIES.pop(name, None)


def names() -> list[str]:
    return sorted(_FACTORIES)


def create(settings: Settings) -> LLMEngine:
    name = settings.llm_engine
    if name == "auto":
        name = next(n for n in _AUTO_ORDER if n in _FACTORIES)
    factory = _FACTORIES.get(name)
    if factory is None:
        raise InvalidInput(f"unknown LLM_ENGINE {name!r}; choose one of: auto, {', '.join(names())}")
    return factory(settings)
