"""Every stage's engine is chosen by name through the same registry, and a stage turned off has
no engine at all (nothing checks a flag): what runs is what `/health` lists."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.core.engines import Engines, Warmup
from app.core.errors import InvalidInput
from app.core.registry import Registry
from app.core.settings import Settings
from app.services import build_engines
from app.speech.registry import ASR_ENGINES, TTS_ENGINES, VAD_ENGINES
from avatars.lipsync import LIPSYNC_ENGINES
from kb.embeddings import EMBEDDING_ENGINES
from tutors.llm import LLM_ENGINES

REGISTRIES = [LLM_ENGINES, EMBEDDING_ENGINES, VAD_ENGINES, ASR_ENGINES, TTS_ENGINES, LIPSYNC_ENGINES]


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.setting)
def test_every_engine_kind_is_chosen_by_its_setting(registry: Registry) -> None:
    field = registry.setting.lower()
    assert field in Settings.model_fields, f"{registry.setting} is a documented setting"
    default = Settings.model_fields[field].default
    assert default in registry.names(), "the default names a registered engine"
    with pytest.raises(InvalidInput, match=rf"unknown {registry.setting} 'nope'; choose one of: .*{default}"):
        registry.create(Settings(_env_file=None, **{field: "nope"}))
    fake = object()
    registry.register("fake", lambda _settings: fake)
    try:
        assert registry.create(Settings(_env_file=None, **{field: "fake"})) is fake
    finally:
        registry.unregister("fake")
    assert "fake" not in registry.names()


def test_a_stage_turned_off_has_no_engine_and_is_not_reported(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, data_dir=tmp_path, llm_engine="local", enable_asr=False, enable_tts=False, enable_avatar=False
    )
    engines = build_engines(settings)
    assert (engines.vad, engines.asr, engines.turn_end, engines.tts, engines.lipsync) == (None,) * 5
    assert list(Warmup(engines).summary()["engines"]) == ["llm", "embeddings"]
    everything = build_engines(Settings(_env_file=None, data_dir=tmp_path, llm_engine="local", tts_engine="offline"))
    assert list(everything.stages()) == ["llm", "embeddings", "vad", "asr", "turn_end", "tts", "lipsync"]


class _Loading:
    """An engine whose weights take as long as the test says."""

    description = "loads until told"

    def __init__(self, name: str, loaded: threading.Event) -> None:
        self.name = name
        self.loaded = loaded

    def warmup(self) -> None:
        self.loaded.wait(10)


async def test_engines_warming_up_leave_the_default_executor_to_the_turns() -> None:
    """More stages loading than the default executor has workers: a turn's short job (storing a
    message, the session sweep) still runs at once, not after the quickest load."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(2))
    loaded = threading.Event()
    engines = Engines(*(_Loading(name, loaded) for name in ("llm", "embeddings", "vad")))  # type: ignore[arg-type]
    warmup = Warmup(engines)
    warming = asyncio.create_task(warmup.run())
    try:
        await asyncio.sleep(0.1)
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "stored"), 2) == "stored"
        assert not warmup.summary()["ready"]
    finally:
        loaded.set()
    await warming
    assert warmup.summary()["ready"]
