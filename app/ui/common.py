"""What every tab shares: the one translation of the server's errors into Gradio's, and the
small reads that several tabs make.

Secrets never go into a component: Gradio publishes component values in its public config.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from app.core.engines import Warmup
from app.core.errors import TutorError, Unauthorized
from tutors.store import TutorStore

F = TypeVar("F", bound=Callable[..., Any])
Teacher = dict[str, Any]  # who is logged in: kept server-side, in a gr.State


@contextlib.contextmanager
def _as_gradio_error() -> Iterator[None]:
    try:
        yield
    except TutorError as exc:
        raise gr.Error(exc.message) from None


def friendly(handler: F) -> F:
    """A UI event handler whose `TutorError`s reach the page as Gradio errors (a toast with
    the message): the UI's one boundary for them. It keeps the handler's kind (streaming,
    async, plain), which Gradio reads to decide how to run it."""
    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def stream(*args: Any, **kwargs: Any) -> Any:
            with _as_gradio_error():
                async for item in handler(*args, **kwargs):
                    yield item

        return stream  # type: ignore[return-value]
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def call(*args: Any, **kwargs: Any) -> Any:
            with _as_gradio_error():
                return await handler(*args, **kwargs)

        return call  # type: ignore[return-value]

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _as_gradio_error():
            return handler(*args, **kwargs)

    return run  # type: ignore[return-value]


def signed_in(teacher: Teacher | None) -> Teacher:
    if not teacher:
        raise Unauthorized("log in first")
    return teacher


def whose(teacher: Teacher) -> int | None:
    """Whose tutors and material a teacher sees: their own; an admin, everyone's (None)."""
    return None if teacher["is_admin"] else teacher["id"]


def check_owns(teacher: Teacher, owner_id: int | None, what: str) -> None:
    """A teacher acts only on what is theirs (an admin on anything)."""
    if not teacher["is_admin"] and owner_id != teacher["id"]:
        raise gr.Error(f"{what} is not yours.")


def read_limited(file: Path, limit: int) -> bytes:
    if file.stat().st_size > limit:
        raise gr.Error(f"The file is larger than {limit // 2**20} MB.")
    return file.read_bytes()


def tutor_choices(tutors: TutorStore, owner_id: int | None = None) -> list[tuple[str, int]]:
    return [(f"{t.name} — {t.subject}" if t.subject else t.name, t.id) for t in tutors.list(owner_id)]


def engine_status(warmup: Warmup) -> str:
    stages = warmup.summary()["stages"]
    lines = [
        f"- **{name}**: `{s['engine']}` — {s['description']} — {s['state']}"
        + (" (fallback)" if s["fallback"] else "")
        + (f": {s['detail']}" if s["detail"] else "")
        for name, s in stages.items()
    ]
    return "**Engines**\n" + "\n".join(lines)
