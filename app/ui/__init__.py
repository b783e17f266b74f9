"""The Gradio UI, one module per tab or concern: `layout` puts them together; `student` and
`call` (the Student tab), `teacher`, `knowledge` and `avatars` (the Teacher tab); `chat` shows
a turn's frames, `common` holds the one error translation."""

from app.ui.layout import build_ui

__all__ = ["build_ui"]
