"""LLM engines by name: a small registry the settings pick from.

Tests and benchmarks register scripted engines here too (`register("scripted", factory)`).
"""

from __future__ import annotations

from collections.abc import Callable

from app.errors import InvalidInput
from app.settings import Settings
from tutors.llm.base import ChatMessage, GenerationOptions, LLMEngine, Notice

__all__ = ["ChatMessage", "GenerationOptions", "LLMEngine", "Notice", "create", "names", "register", "unregister"]

Factory = Callable[[Settings], LLMEngine]


def _local(settings: Settings) -> LLMEngine:
    from tutors.llm.local import LocalLLM

    return LocalLLM(settings.local_llm_model_path, settings.local_llm_context)


def _ollama(settings: Settings) -> LLMEngine:
    from tutors.llm.ollama_engine import OllamaLLM

    return OllamaLLM(
        settings.ollama_base_url,
        connect_timeout=settings.ollama_connect_timeout,
        context_window=settings.ollama_context,
        default_model=settings.default_llm_model,
    )


def _auto(settings: Settings) -> LLMEngine:
    """Ollama with the embedded model as its visible fallback; the embedded model alone when
    the operator turned the LLM server off (ENABLE_LLM=false)."""
    if not settings.enable_llm:
        return _local(settings)
    from tutors.llm.fallback import FallbackLLM

    return FallbackLLM(_ollama(settings), _local(settings), probe_seconds=settings.ollama_probe_seconds)


_FACTORIES: dict[str, Factory] = {"auto": _auto, "local": _local, "ollama": _ollama}


def register(name: str, factory: Factory) -> None:
    _FACTORIES[name] = factory


def unregister(name: str) -> None:
    _FACTORIES.pop(name, None)


def names() -> list[str]:
    return sorted(_FACTORIES)


def create(settings: Settings) -> LLMEngine:
    name = settings.llm_engine
    factory = _FACTORIES.get(name)
    if factory is None:
        raise InvalidInput(f"unknown LLM_ENGINE {name!r}; choose one of: {', '.join(names())}")
    return factory(settings)
