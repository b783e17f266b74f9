"""Avatars as a resource: create from an upload or from the import folder, prepare in the
background with progress, list, get, delete, and load a ready one for the lip-sync engines.

Sources are copied into `AVATARS_DIR/sources/` (so preparation can resume after a restart);
prepared avatars live in `AVATARS_DIR/<avatar_id>/` (see `avatars.prepare`). Replicas share
one `AVATARS_DIR` (a network file system): prepared once by the box that took the video, read by
all; a deletion is announced (`AVATAR_DELETED`) so no box keeps the frames it loaded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.core.db import AvatarRow, Database, check_owner, claim_unfinished
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.events import AVATAR_DELETED, RESYNC, Events, OneBox
from avatars.frames import AvatarFrames
from avatars.prepare import Limits, PreparationFailed, prepare

log = logging.getLogger(__name__)

_AVATAR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"}


@dataclass(frozen=True)
class Avatar:
    avatar_id: str
    status: str  # preparing | ready | failed
    progress: float
    stage: str
    error: str | None
    source: str
    info: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    owner_id: int | None = None  # the teacher who made it; None: the web backend's, shared


def _avatar(row: AvatarRow) -> Avatar:
    fields = {f.name: getattr(row, f.name) for f in dataclasses.fields(Avatar) if f.name != "avatar_id"}
    return Avatar(avatar_id=row.id, **fields)


class Avatars:
    def __init__(
        self,
        db: Database,
        root: Path,
        import_dir: Path | None,
        limits: Limits,
        lipsync: Any = None,
        *,
        replica: str = "",
        events: Events | None = None,
    ) -> None:
        self._lipsync = lipsync  # an engine with `prepare_avatar` adds its own data (MuseTalk's latents)
        self._db = db
        self.replica = replica
        self._events = events or OneBox()
        self._events.subscribe(AVATAR_DELETED, lambda message: self._let_go(message["avatar_id"]))
        self._events.subscribe(RESYNC, lambda _message: self._forget_loaded())
        self.root = root
        self.import_dir = import_dir
        self.limits = limits
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._loaded: dict[str, AvatarFrames] = {}
        self._load_lock = threading.Lock()
        self._prepare_lock = asyncio.Lock()  # one at a time: decoding and face finding are CPU-bound

    @property
    def _sources(self) -> Path:
        return self.root / "sources"

    # -- create ------------------------------------------------------------------------------
    def _check_new(self, avatar_id: str, suffix: str, owner_id: int | None) -> None:
        if not _AVATAR_ID.match(avatar_id or ""):
            raise InvalidInput("an avatar_id is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        if suffix.lower() not in VIDEO_SUFFIXES:
            raise InvalidInput(f"an avatar is made from a video ({', '.join(sorted(VIDEO_SUFFIXES))})")
        with self._db.session() as db:
            if db.get(AvatarRow, avatar_id) is not None:
                raise Conflict(f"avatar {avatar_id} already exists; delete it first to replace it")
            check_owner(db, owner_id)

    def _register(self, avatar_id: str, source_name: str, write: Any, suffix: str, owner_id: int | None) -> Avatar:
        self._sources.mkdir(parents=True, exist_ok=True)
        path = self._sources / f"{avatar_id}{suffix.lower()}"
        write(path)
        with self._db.session() as db:
            row = AvatarRow(
                id=avatar_id,
                source=source_name,
                status="preparing",
                progress=0.0,
                stage="queued",
                owner_id=owner_id,
                replica=self.replica,
            )
            db.add(row)
            db.commit()
            return _avatar(row)

    def create_from_upload(self, avatar_id: str, filename: str, data: bytes, owner_id: int | None = None) -> Avatar:
        suffix = Path(filename or "").suffix
        self._check_new(avatar_id, suffix, owner_id)
        return self._register(avatar_id, Path(filename).name, lambda path: path.write_bytes(data), suffix, owner_id)

    def create_from_path(self, avatar_id: str, video_path: str, owner_id: int | None = None) -> Avatar:
        """Only a file inside the import folder: the path comes from a client, and must not
        reach anything else on the server (`..`, absolute paths and symlinks are resolved)."""
        if self.import_dir is None:
            raise InvalidInput("no import folder is configured (AVATAR_IMPORT_DIR); upload the video instead")
        folder = self.import_dir.resolve()
        try:
            candidate = (folder / video_path).resolve()
            found = candidate.is_relative_to(folder) and candidate.is_file()
        except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL byte
            raise InvalidInput(f"video_path is not a usable file name ({exc.__class__.__name__})") from exc
        if not candidate.is_relative_to(folder):
            raise InvalidInput("video_path must name a file inside the server's avatar import folder")
        if not found:
            raise NotFound(f"no video {video_path!r} in the avatar import folder")
        self._check_new(avatar_id, candidate.suffix, owner_id)
        return self._register(
            avatar_id,
            str(candidate.relative_to(folder)),
            lambda path: shutil.copyfile(candidate, path),
            candidate.suffix,
            owner_id,
        )

    # -- read / delete -------------------------------------------------------------------------
    def get(self, avatar_id: str) -> Avatar:
        with self._db.session() as db:
            row = db.get(AvatarRow, avatar_id)
            if row is None:
                raise NotFound(f"avatar {avatar_id} not found")
            return _avatar(row)

    def list(self, owner_id: int | None = None) -> list[Avatar]:
        """All avatars, or one teacher's."""
        query = select(AvatarRow).order_by(AvatarRow.created_at)
        if owner_id is not None:
            query = query.where(AvatarRow.owner_id == owner_id)
        with self._db.session() as db:
            return [_avatar(r) for r in db.scalars(query)]

    def delete(self, avatar_id: str) -> None:
        self.get(avatar_id)
        self._let_go(avatar_id)
        with self._db.session() as db:
            row = db.get(AvatarRow, avatar_id)
            if row is not None:
                db.delete(row)
                db.commit()
        shutil.rmtree(self.root / avatar_id, ignore_errors=True)
        for source in self._sources.glob(f"{avatar_id}.*"):
            source.unlink(missing_ok=True)
        self._events.publish(AVATAR_DELETED, avatar_id=avatar_id)

    def _let_go(self, avatar_id: str) -> None:
        """Stop preparing it and drop its loaded frames (this replica's hold on it)."""
        task = self._tasks.pop(avatar_id, None)
        if task is not None:
            task.get_loop().call_soon_threadsafe(task.cancel)
        with self._load_lock:
            self._loaded.pop(avatar_id, None)

    def _forget_loaded(self) -> None:
        with self._load_lock:
            self._loaded.clear()

    def frames(self, avatar_id: str | None) -> AvatarFrames | None:
        """A ready avatar's frames for the lip-sync engines (cached), or None."""
        if not avatar_id:
            return None
        with self._load_lock:
            if avatar_id in self._loaded:
                return self._loaded[avatar_id]
        try:
            if self.get(avatar_id).status != "ready":
                return None
        except NotFound:
            return None
        frames = AvatarFrames(avatar_id, self.root / avatar_id)
        with self._load_lock:
            return self._loaded.setdefault(avatar_id, frames)

    # -- preparation ---------------------------------------------------------------------------
    def unfinished(self) -> list[str]:
        """Preparations a restart of this replica interrupted (another box finishes its own)."""
        return claim_unfinished(self._db, AvatarRow, AvatarRow.status == "preparing", self.replica)

    def schedule(self, avatar_id: str) -> None:
        """Prepare in the background (call on the event loop)."""
        task = asyncio.create_task(self._run(avatar_id), name=f"prepare-avatar-{avatar_id}")
        self._tasks[avatar_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(avatar_id, None))

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, avatar_id: str) -> None:
        async with self._prepare_lock:
            await asyncio.to_thread(self.prepare_now, avatar_id)

    def _update(self, avatar_id: str, **values: Any) -> bool:
        """False when the avatar was deleted meanwhile."""
        with self._db.session() as db:
            row = db.get(AvatarRow, avatar_id)
            if row is None:
                return False
            for name, value in values.items():
                setattr(row, name, value)
            db.commit()
            return True

    def _engine_data(self, avatar_id: str) -> dict[str, str]:
        prepare_avatar = getattr(self._lipsync, "prepare_avatar", None)
        if prepare_avatar is None:
            return {}
        self._update(avatar_id, stage="lip-sync engine data", progress=0.99)
        try:
            return prepare_avatar(AvatarFrames(avatar_id, self.root / avatar_id))
        except Exception as exc:  # the avatar still works with the CPU engine
            log.exception("avatar %s: lip-sync engine data failed", avatar_id)
            return {"musetalk": f"failed: {exc}"}

    def prepare_now(self, avatar_id: str) -> Avatar:
        sources = list(self._sources.glob(f"{avatar_id}.*"))
        last = [0.0]

        def progress(stage: str, fraction: float) -> None:
            if time.monotonic() - last[0] >= 0.25 or fraction >= 1.0:  # a DB write per quarter second at most
                last[0] = time.monotonic()
                if not self._update(avatar_id, stage=stage, progress=round(min(fraction, 0.99), 3)):
                    raise PreparationFailed("the avatar was deleted during preparation")

        try:
            if not sources:
                raise PreparationFailed("the source video is gone; upload it again")
            info = prepare(sources[0], self.root / avatar_id, self.limits, progress)
        except PreparationFailed as exc:
            self._update(avatar_id, status="failed", stage="failed", error=str(exc))
        except Exception as exc:  # a bug, not the teacher's video: logged in full, reported briefly
            log.exception("avatar %s: preparation failed", avatar_id)
            self._update(avatar_id, status="failed", stage="failed", error=f"preparation failed: {exc}")
        else:
            summary = {key: info[key] for key in ("fps", "frames", "size", "loop_frames", "source_crop")}
            summary["engines"] = {"warp": "ready", **self._engine_data(avatar_id)}
            if not self._update(avatar_id, status="ready", stage="ready", progress=1.0, info=summary, error=None):
                shutil.rmtree(self.root / avatar_id, ignore_errors=True)  # deleted while finishing
        return self.get(avatar_id)
