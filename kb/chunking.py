"""Cut sections into passages of a few sentences, in English or Chinese."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kb.parsing import Section

# A sentence ends at . ! ? ; (and their full-width forms) or a blank line.
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])|(?<=\.)\s+|\n\s*\n")


@dataclass(frozen=True)
class Chunk:
    text: str
    page: int | None
    heading: str | None


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def chunk_sections(sections: list[Section], max_chars: int = 700, overlap: int = 1) -> list[Chunk]:
    """Greedy packing of whole sentences up to `max_chars`; the last `overlap` sentences of a
    chunk open the next, so an answer spanning a boundary is still found whole once."""
    chunks: list[Chunk] = []
    for section in sections:
        sentences = split_sentences(section.text)
        # A very long "sentence" (a table row dump, no punctuation) is cut by length.
        sentences = [piece for s in sentences for piece in _cut(s, max_chars)]
        current: list[str] = []
        for sentence in sentences:
            if current and sum(len(s) + 1 for s in current) + len(sentence) > max_chars:
                chunks.append(Chunk(" ".join(current), section.page, section.heading))
                current = current[-overlap:] if overlap else []
                if sum(len(s) + 1 for s in current) + len(sentence) > max_chars:
                    current = []
            current.append(sentence)
        if current:
            chunks.append(Chunk(" ".join(current), section.page, section.heading))
    return chunks


def _cut(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [text]
