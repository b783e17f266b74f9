"""Cut sections into passages of a few sentences, in English or Chinese."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kb.parsing import Section

# A Chinese sentence ends at 。！？； (with any closing quotes). A Latin one ends at . ! ? (with
# closing quotes, brackets or a citation mark like "[3]") when the next sentence visibly
# starts: a capital, a digit or an opening quote after a space. A blank line ends either.
_CJK_END = re.compile(r"[。！？；]+[”’」』）)]*")
_LATIN_END = re.compile(r"[.!?]+(?:[\"'”’)\]]|\[[^\]\s]{1,20}\])*(?=\s+[\"“‘(\[]?[A-Z0-9\u3400-\u9fff])")
_BLANK_LINE = re.compile(r"\n\s*\n")
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs no fig approx etc e.g i.e u.s "
    "jan feb mar apr jun jul aug sep sept oct nov dec".split()
)


@dataclass(frozen=True)
class Chunk:
    text: str
    page: int | None
    heading: str | None


def with_heading(text: str, heading: str | None) -> str:
    """What retrieval matches (embeddings and keywords alike): the text under its heading,
    since a passage cut from a section seldom names the section's topic itself."""
    return f"{heading}\n{text}" if heading else text


def word_before(text: str) -> str:
    """The word (letters and dots) `text` ends with, lower case: what a "." after it may
    abbreviate ("mr", "e.g", a single letter)."""
    word = re.search(r"[A-Za-z.]+$", text)
    return word.group().lower() if word else ""


def split_sentences(text: str) -> list[str]:
    cuts = {m.end() for m in _CJK_END.finditer(text)} | {m.start() for m in _BLANK_LINE.finditer(text)}
    for match in _LATIN_END.finditer(text):
        token = word_before(text[: match.start()])
        if match.group().startswith(".") and (token in ABBREVIATIONS or len(token) == 1):
            continue  # "Mr. Hinx", "J. Smith", "e.g. this"
        cuts.add(match.end())
    pieces, start = [], 0
    for cut in sorted(cuts):
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return [p.strip() for p in pieces if p.strip()]


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
