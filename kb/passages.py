"""A retrieved passage and where it comes from: what search returns and answers cite."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Passage:
    text: str
    score: float
    source: dict[str, Any]
    chunk_id: str


def describe_source(source: dict[str, Any]) -> str:
    """Where a passage comes from, for people: "notes.pdf, p. 3" or "notes.md, Cells"."""
    place = f"p. {source['page']}" if "page" in source else source.get("section", "")
    return f"{source['document']}, {place}" if place else source["document"]
