"""Lip-sync engines by name (`LIPSYNC_ENGINE`)."""

from __future__ import annotations

from collections.abc import Callable

from app.errors import InvalidInput
from app.settings import Settings
from avatars.lipsync.base import LipSync
from avatars.lipsync.warp import WarpLipSync

_ENGINES: dict[str, Callable[[Settings], LipSync]] = {"warp": lambda _settings: WarpLipSync()}


def create(settings: Settings) -> LipSync:
    factory = _ENGINES.get(settings.lipsync_engine)
    if factory is None:
        raise InvalidInput(f"unknown LIPSYNC_ENGINE {settings.lipsync_engine!r}; choose one of: {', '.join(_ENGINES)}")
    return factory(settings)
