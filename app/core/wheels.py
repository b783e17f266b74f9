"""Model files that ship inside wheels, some split across several (a package index's size
limit): where a package's files are, and a split file joined once into a cache folder."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path


def package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "virtual-tutor"


def joined(parts: list[Path], name: str, folder: Path, companions: tuple[Path, ...] = ()) -> Path:
    """`folder`/`name`, the `parts` end to end, with copies of the `companions` beside it. The
    folder is built aside and renamed into place, so servers starting together never read a
    half-made one; an existing one of the right size is used as it is. OSError when it cannot
    be built."""
    size = sum(p.stat().st_size for p in parts)
    target = folder / name
    if target.is_file() and target.stat().st_size == size:
        return target
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for companion in companions:
            shutil.copyfile(companion, building / companion.name)
        with (building / name).open("wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    shutil.copyfileobj(source, out, 1 << 22)
        try:
            building.rename(folder)
        except OSError:  # another server made it first
            if not target.is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target
