"""Lip-sync engines by name (`LIPSYNC_ENGINE`): `auto` uses MuseTalk when its weights and a
GPU are there and otherwise, visibly in `/health`, the weight-free `warp` engine."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from app.core.engines import Composite, LipSync, PreparedAvatar
from app.core.errors import EngineUnavailable
from app.core.media import Speech, VideoFrame
from app.core.registry import Registry
from app.core.settings import Settings
from avatars.lipsync.musetalk import MuseTalkLipSync
from avatars.lipsync.warp import WarpLipSync

log = logging.getLogger(__name__)


class LipSyncFallback(Composite):
    """The primary engine if it loads; else the fallback, saying why."""

    def __init__(self, primary: LipSync, fallback: LipSync) -> None:
        self.primary, self.fallback = primary, fallback
        self.fallback_active = False
        self.status_detail = ""

    def warmup(self) -> None:
        try:
            self.primary.warmup()
        except EngineUnavailable as exc:
            log.warning("lip-sync: %s; using %s", exc.message, self.fallback.name)
            self.fallback_active = True
            self.status_detail = f"{exc.message}; animating with {self.fallback.name} instead"
            self.fallback.warmup()

    def render(self, avatar: PreparedAvatar, speech: Speech, start: int) -> Iterator[VideoFrame]:
        return self._current.render(avatar, speech, start)

    def prepare_avatar(self, avatar: PreparedAvatar) -> dict[str, str]:
        if self.fallback_active:
            return {self.primary.name: f"not prepared: {self.status_detail}"}
        prepare = getattr(self.primary, "prepare_avatar", None)
        return prepare(avatar) if prepare else {}


def _musetalk(settings: Settings) -> MuseTalkLipSync:
    return MuseTalkLipSync(
        settings.musetalk_models, device=settings.musetalk_device, batch_size=settings.musetalk_batch_size
    )


LIPSYNC_ENGINES = Registry[LipSync](
    "LIPSYNC_ENGINE",
    {
        "auto": lambda s: LipSyncFallback(_musetalk(s), WarpLipSync()),
        "musetalk": _musetalk,
        "warp": lambda _settings: WarpLipSync(),
    },
)
