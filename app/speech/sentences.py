"""Cut a streaming answer into sentences, so each is spoken as soon as it is complete.

A boundary is end punctuation (. ! ? … and the CJK 。！？；) followed by the start of the next
sentence; waiting for that next character is what tells "3.14", "e.g." and the answer's very
last sentence apart, and costs one token. A run-on without punctuation is cut at a comma or a
space once it grows long, so speech never waits for the whole answer. The answer's first
piece may end at a comma too (once it has `first_min_chars`), before a word that opens a phrase
("that", "because", "of": once it has half that), or at a space once it is three times that
long: the first audio then waits only for a phrase, which is where a student notices the delay.

Lengths are counted in Latin letters: a Chinese character weighs `CJK_WIDTH` of them, since it
carries about as much as a short word (and costs a small model several tokens to write). A
count in characters made a Chinese tutor's first clause twice as long as an English one.
"""

from __future__ import annotations

import re

_CJK_END = "。！？；"
_LATIN_END = ".!?;…"
_ABBREVIATIONS = {"e.g", "i.e", "etc", "mr", "mrs", "ms", "dr", "prof", "vs", "fig", "no", "st", "approx"}
_CITATION = re.compile(r"\[\d+(?:[,，]\s*\d+)*\]")
_MARKUP = re.compile(r"[*_`#>|]+|\]\([^)]*\)|\[")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_MARK = re.compile(r"\s+([.,!?;:。！？，；：])")
_LIST_NUMBER = re.compile(r"(?:^|\n)\s*\d+$")


def speakable(text: str) -> str:
    """What a voice should read: no citation marks, Markdown or doubled spaces."""
    text = _CITATION.sub("", text)
    text = _MARKUP.sub(" ", text)
    text = _SPACE_BEFORE_MARK.sub(r"\1", _SPACES.sub(" ", text))
    return text.strip(" -–—")


_CLAUSE_END = ",，、:：;；"
# Words a phrase opens with: the answer's first piece may also end before one of these, where a
# speaker may pause ("Gravity is the force | that pulls objects…"), once it is half as wide as
# a clause. Piper took 0.29 s for that whole sentence on two cores, 0.10 s for its first phrase.
_PHRASE_OPENERS = frozenset(
    """because since although though while when where which who whose that so but and or if
    unless until how why of in on at to for with from through into towards toward by during
    about after before""".split()
)
# Complete, and another word after it: not the sentence's last ("…cover that.", "…made of [1].").
_OPENING_WORD = re.compile(r"([A-Za-z]+) +(?=[A-Za-z0-9])")
# What a piece may end with where the voice's own pause belongs: a sentence's or clause's mark,
# a closing quote or bracket. A piece ending otherwise was cut mid-phrase (`SentenceSplitter`).
_PAUSING = _LATIN_END + _CJK_END + _CLAUSE_END + "\"'”’)）」"
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
CJK_WIDTH = 3


def _widths(text: str) -> list[int]:
    """The length of each prefix of `text`, in Latin letters: widths[i] is text[:i]'s."""
    widths = [0]
    for char in text:
        widths.append(widths[-1] + (CJK_WIDTH if _CJK.fullmatch(char) else 1))
    return widths


def ends_mid_phrase(piece: str) -> bool:
    """Whether a piece was cut where no pause belongs: before a word that opens a phrase, or a
    run-on cut at a space or where its width ran out."""
    return bool(piece) and piece[-1] not in _PAUSING


def rejoin(pieces: list[str]) -> str:
    """Pieces cut by `SentenceSplitter`, as one text again: no space after Chinese (which has
    none between sentences), one after anything else."""
    return "".join(p if _CJK.fullmatch(p[-1:]) else p + " " for p in pieces).strip()


class SentenceSplitter:
    def __init__(self, max_chars: int = 160, first_min_chars: int | None = 24) -> None:
        self.max_chars = max_chars
        self.first_min_chars = first_min_chars
        self._buffer = ""
        self._first = True

    def push(self, text: str) -> list[str]:
        """Add streamed text; the sentences it completes."""
        self._buffer += text
        out = []
        while (cut := self._boundary()) is not None:
            sentence, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:].lstrip()
            if sentence:
                out.append(sentence)
                self._first = False
        return out

    def flush(self) -> str:
        """The rest, at the end of the answer."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest

    def _boundary(self) -> int | None:
        text = self._buffer
        widths = _widths(text)
        first = self.first_min_chars if self._first else None  # the first piece's own cuts
        for i, char in enumerate(text):
            if i + 1 >= len(text):
                break
            following = text[i + 1]
            if char in _CJK_END and following not in _CJK_END + _LATIN_END + "”’\"')）":
                return i + 1
            if char in _LATIN_END and following.isspace() and not self._abbreviation(text, i):
                return i + 1
            if char == "\n" and text[:i].strip():
                return i + 1
            if first is None:
                continue
            if widths[i + 1] >= first and char in _CLAUSE_END and (following.isspace() or char not in ",:;"):
                return i + 1
            if char == " " and widths[i] >= first // 2 and self._opens(text, i + 1):
                return i + 1
        longest = self.max_chars
        if first is not None:
            longest = min(longest, 3 * first)
        if widths[-1] > longest:
            return self._cut(text, widths, longest)
        return None

    @staticmethod
    def _cut(text: str, widths: list[int], longest: int) -> int:
        """Where to cut a run-on whose width passed `longest`: its last clause mark or space
        in the second two-thirds of that width, else where the width runs out (Chinese
        writes no spaces, and a sentence without marks must still be spoken)."""
        end = next(i for i, width in enumerate(widths) if width > longest) - 1
        window = text[:end]
        for mark in ("，", ",", "、", ":", "：", " "):
            at = window.rfind(mark)
            if widths[at + 1] > longest // 3:
                return at + 1
        return max(end, 1)

    @staticmethod
    def _opens(text: str, at: int) -> bool:
        """Whether a phrase opens at `at`: with one of its words, complete and not the last."""
        word = _OPENING_WORD.match(text, at)
        return word is not None and word.group(1).lower() in _PHRASE_OPENERS

    @staticmethod
    def _abbreviation(text: str, dot: int) -> bool:
        if text[dot] != ".":
            return False
        word = re.search(r"([A-Za-z.]+)$", text[:dot])
        if not word:
            return bool(_LIST_NUMBER.search(text[:dot]))  # "1. First, ..." numbers a list item
        token = word.group(1).lower()
        return token in _ABBREVIATIONS or len(token) == 1  # "J. Smith", "p. 4"


def first_spoken(answer: str, max_chars: int) -> str:
    """What a whole answer's first piece sounds like: the sentence the `Sentences` stage cuts
    first, as `Speak` hands it to the voice. Speaking it ahead (foresight) must produce exactly
    this text, or the turn cannot use it."""
    splitter = SentenceSplitter(max_chars)
    return speakable(next(iter(splitter.push(answer)), None) or splitter.flush())
