"""A retrieved passage and where it comes from: what search returns and answers cite."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

_GLOSS = re.compile(r"\s*[（(][^（()）]*[)）]")  # "渠成 (足球运动员)": the heading names 渠成


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


def document_name(source: dict[str, Any]) -> str:
    """A document's name as a person would say it: `Marie_Curie.md` → "Marie Curie"."""
    return PurePath(str(source.get("document", ""))).stem.replace("_", " ")


def topics(source: dict[str, Any]) -> list[str]:
    """What a passage is about by its place: its heading (without a gloss), then its document's name."""
    heading = _GLOSS.sub("", str(source.get("section", ""))).strip()
    return [t for t in (heading, document_name(source)) if t]
