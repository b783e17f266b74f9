"""A model's loops, taken out of its answer while it streams.

A small model falls into loops, the more so outside English: SmolLM2 greeted with "你好！"
answered "你好！！\\n\\n！！！\\n\\n你好！！\\n\\n你好！！…" and then a run of "＃" up to its
token limit, and "谢谢老师！" got "谢谢" and four hundred "！". Shown and spoken, that is worse
than a short answer. `Repeats` passes the answer on as it streams, except that:

- a sentence the answer already said ends it (and is not passed on): a model that repeats a
  sentence word for word is looping, and everything after is the loop. Only sentences closed
  by their marks count (not lines of code or list items), and one of fewer than `SHORT`
  letters only right after itself ("P.S. P.S.");
- the same mark or symbol more than `MAX_RUN` times in a row ends it after `KEEP_RUN` of them
  (letters, digits and `_ - = * #` never: 300000000, blanks to fill in, Markdown);
- words said back to back inside a sentence ("美女美女美女美女…", 'The answer is "The answer
  is "…') end it after their first time: three times for a piece of `LONG` characters or
  more, four for a shorter one ("very very very" and 1,000,000,000 stay: a piece must hold a
  letter);
- the sentence's own closing marks piled up after it ("你好！！\\n\\n！！！") are left out.

While the sentence being written could still become one already said (its words so far begin
one), or words it has just said again may be looping, it is held back; the moment it cannot,
it flows on. Everything else streams unchanged, so the first words reach the voice as soon as
before. The work per character is constant: this runs on the event loop for every token.
"""

from __future__ import annotations

import re

from kb.chunking import ABBREVIATIONS

MAX_RUN = 12
KEEP_RUN = 3
SHORT = 4
LONG = 8
MAX_PERIOD = 40  # the longest piece a loop inside a sentence is looked for as
_CLOSING = frozenset("。！？!?；;")
_NEVER_RUNS = frozenset("_-=*#")
_LETTER = re.compile(r"[^\W\d_]")
_TOKEN = re.compile(r"([A-Za-z.]+)$")


class Repeats:
    """Push the model's pieces in; what comes out is the answer without its loops. `looped`
    turns true when the rest of the answer is a loop: stop the model then. Every character
    pushed is either passed on or counted in `left_out`."""

    def __init__(self) -> None:
        self.said: set[str] = set()  # the words of the long closed sentences so far
        self.last = ""  # the words of the sentence before
        self.left_out = 0
        self.looped = False
        self._start()

    def _start(self) -> None:
        """A new sentence."""
        self.text = ""
        self.passed = 0  # passed on up to here
        self.words = ""  # its letters and digits, lower case, up to its end
        self.end: int | None = None  # just past its closing marks, or its line
        self.marks = ""  # the closing marks it ended with: "" for a line's end
        self.candidates = [*self.said, self.last] if self.last else list(self.said)  # it may be repeating
        self.run = 0  # how many times in a row its last character came
        self.echoes = [0] * (MAX_PERIOD + 1)  # per length p: its last characters equal to those p before

    def push(self, piece: str) -> str:
        return "".join(self._add(char) for char in piece)

    def flush(self) -> str:
        """What is held at the end of the answer."""
        return "" if self.looped else self._close()

    def _add(self, char: str) -> str:
        if self.looped:
            self.left_out += 1
            return ""
        out = ""
        # After its end, a sentence goes on with spaces, more marks right after its own ("?!")
        # and its own marks again ("！！\n\n！！！", dropped); anything else begins the next.
        closing = char in _CLOSING and (self.end == len(self.text) or char in self.marks)
        if self.end is not None and not char.isspace() and not closing:
            out = self._close()
            if self.looped:
                self.left_out += 1
                return out
        elif self.end is None and char.isspace() and self.text.endswith(".") and self._dot_ends(char):
            self.end, self.marks = len(self.text), "."
        previous = self.text[-1:]
        self.text += char
        n = len(self.text)
        if self.end is None:
            if char in _CLOSING or char == "\n":
                self.end, self.marks = n, char.strip()
            elif char.isalnum():
                self.words += char.lower()
                at = len(self.words) - 1
                self.candidates = [c for c in self.candidates if len(c) > at and c[at] == self.words[at]]
        elif char in _CLOSING and self.end == n - 1:
            self.end, self.marks = n, self.marks + char  # "?!", "！！": one sentence's marks
        self.run = self.run + 1 if char == previous else 1
        if self.run > MAX_RUN and not char.isalnum() and not char.isspace() and char not in _NEVER_RUNS:
            return out + self._loop(n - self.run + KEEP_RUN)
        cut = self._echo(n)
        return out + (self._loop(cut) if cut is not None else self._pass())

    def _dot_ends(self, space: str) -> bool:
        """Whether the "." just written ends the sentence, `space` coming after it: not after
        an abbreviation or a single letter ("Mr.", "U.S.", "a.m."), unless the line ends."""
        if space == "\n":
            return True
        found = _TOKEN.search(self.text[-12:-1])
        token = found.group(1).lower() if found else ""
        return not (token in ABBREVIATIONS or len(token) == 1 or "." in token)

    def _echo(self, n: int) -> int | None:
        """Counts the last character's echoes; where the sentence now ends in a piece said back
        to back often enough to be a loop, the length that keeps it once."""
        text, loop = self.text, None
        for p in range(2, min(MAX_PERIOD, n - 1) + 1):
            self.echoes[p] = self.echoes[p] + 1 if text[-1] == text[-1 - p] else 0
            if self.echoes[p] + p >= p * (3 if p >= LONG else 4):
                first = n - self.echoes[p]
                if _LETTER.search(text, first - p, first):
                    loop = max(loop or 0, first)
        return loop

    def _pass(self) -> str:
        """The sentence so far, up to its closing marks, unless it may be becoming a repeat or
        a loop (held until it cannot)."""
        if not self.words or self.candidates:
            return ""
        n = len(self.text)
        upto = n if self.end is None else self.end
        if self.run > KEEP_RUN and not self.text[-1].isalnum():  # a run that may not end
            upto = min(upto, n - self.run + KEEP_RUN)
        for p in range(2, min(MAX_PERIOD, n - 1) + 1):
            if self.echoes[p] and _LETTER.search(self.text, n - self.echoes[p] - p, n - self.echoes[p]):
                upto = min(upto, n - self.echoes[p])  # said again right after itself: may loop
        if upto <= self.passed:
            return ""
        out, self.passed = self.text[self.passed : upto], upto
        return out

    def _loop(self, keep: int) -> str:
        """The rest of the answer is a loop: the sentence's first `keep` characters are what is
        left of it."""
        release = self.text[self.passed : keep] if self.words and not self.candidates else ""
        self.left_out += len(self.text) - self.passed - len(release)
        self.looped = True
        self._start()
        return release

    def _close(self) -> str:
        """The sentence is complete: what is left of it and the spaces after its marks (the
        marks piled there dropped), or nothing if it repeats one or is nothing but marks."""
        text, words, marks = self.text, self.words, self.marks
        upto = len(text) if self.end is None else self.end
        repeat = marks and words and (words == self.last if len(words) < SHORT else words in self.said)
        if repeat or not text.strip().strip("".join(_CLOSING) + "."):
            self.left_out += len(text) - self.passed
            self.looped = bool(repeat)
            self._start()
            return ""
        space = re.match(r"\s*", text[upto:]).group()  # type: ignore[union-attr]
        out = text[self.passed : upto] + space
        self.left_out += len(text) - self.passed - len(out)
        if words:
            self.last = words
            if marks and len(words) >= SHORT:
                self.said.add(words)
        self._start()
        return out
