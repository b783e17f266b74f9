"""Each tutor's LLM, chosen by `LLM_ENGINE` from a registry of engines.

`auto` (the default) is Ollama with the embedded model as its visible fallback, or the
embedded model alone when the operator turned the LLM server off (`ENABLE_LLM=false`); tests
and benchmarks register scripted engines (`LLM_ENGINES.register("scripted", factory)`).
"""

from __future__ import annotations

from app.core.engines import LLMEngine
from app.core.registry import Registry
from app.core.settings import Settings
from tutors.llm.fallback import FallbackLLM
from tutors.llm.local import LocalLLM
from tutors.llm.ollama_engine import OllamaLLM


def _local(settings: Settings) -> LLMEngine:
    return LocalLLM(settings.local_llm_model_path, settings.local_llm_context)


def _ollama(settings: Settings) -> LLMEngine:
    return OllamaLLM(
        settings.ollama_base_url,
        connect_timeout=settings.ollama_connect_timeout,
        context_window=settings.ollama_context,
        default_model=settings.default_llm_model,
    )


def _auto(settings: Settings) -> LLMEngine:
    if not settings.enable_llm:
        return _local(settings)
    return FallbackLLM(_ollama(settings), _local(settings), probe_seconds=settings.ollama_probe_seconds)


LLM_ENGINES = Registry[LLMEngine]("LLM_ENGINE", {"auto": _auto, "local": _local, "ollama": _ollama})
