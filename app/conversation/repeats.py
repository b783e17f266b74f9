"""A model's loops, taken out of its answer while it streams.

A small model falls into loops, the more so outside English: SmolLM2 greeted with "你好！"
answered "你好！！\\n\\n！！！\\n\\n你好！！\\n\\n你好！！…" and then a run of "＃" up to its
token limit, and "谢谢老师！" got "谢谢" and four hundred "！". Shown and spoken, that is worse
than a short answer. `Repeats` passes the answer on as it streams, except that:

- sentences (or lines) that repeat the one, two or three before them end it, and are not
  passed on ("A. A.", "A. B. A. B."): a model that says them again is looping, and everything
  after is the loop. A sentence of `LONG_SENTENCE` letters or more ends it if said anywhere
  before. Short sentences said again further on ("Correct!", "Stir well.") are an answer's own;
- the same punctuation mark (or a full-width symbol such as ＃) more than `MAX_RUN` times in a
  row ends it after `KEEP_RUN` of them;
- a piece holding letters said back to back inside a sentence ("美女美女美女…", 'The answer
  is "The answer is "…') ends it after its first time: four times for a piece of `LONG`
  characters or more, six for a shorter one ("2 x 2 x 2 x 2", "TTAGGG" repeats, table rows
  and pieces of one letter stay);
- full-width closing marks piled up after a sentence's own ("你好！！\\n\\n！！！") are left out.

Fenced code (```) passes untouched. While a sentence could still become one that would end the
answer (its words so far begin one), or a piece it has just said again may be looping, it is
held back; the moment it cannot, it flows on. The work per character is constant: this runs on
the event loop for every token.
"""

from __future__ import annotations

import re
import unicodedata

from kb.chunking import ABBREVIATIONS, word_before

MAX_RUN = 12
KEEP_RUN = 3
LONG = 8
LONG_SENTENCE = 20
MAX_PERIOD = 40  # the longest piece a loop inside a sentence is looked for as
PERIODS = 3  # a loop of up to three sentences
_FULL_STOPS = frozenset("。！？；")  # end a sentence where they stand
_LATIN_STOPS = re.compile(r"[.!?]+$")  # end one before a space
_RUNS = frozenset("！？!?。，、；…")
_LETTER = re.compile(r"[^\W\d_]")


def _loops_as_run(char: str) -> bool:
    return char in _RUNS or ("\uff00" <= char <= "\uffef" and not char.isalnum())


def _key(sentence: str) -> str:
    """What a sentence says, for telling a repeat: its characters but spaces and punctuation."""
    return "".join(c for c in sentence.lower() if not c.isspace() and not unicodedata.category(c).startswith("P"))


class Repeats:
    """Push the model's pieces in; what comes out is the answer without its loops. `looped`
    turns true when the rest of the answer is a loop: stop the model then. Every character
    pushed is either passed on or counted in `left_out`."""

    def __init__(self) -> None:
        self.said: set[str] = set()  # the words of the long closed sentences so far
        self.keys: list[str] = []  # what each closed sentence said, in order
        self.recent: list[str] = []  # the words of the last `PERIODS` sentences
        self.left_out = 0
        self.looped = False
        self.code = False  # inside a fenced code block
        self.line = ""  # the line being written, for its fences
        self._start()

    def _start(self) -> None:
        """A new sentence."""
        self.text = ""
        self.passed = 0  # passed on up to here
        self.words = ""  # its letters and digits, lower case, up to its end
        self.end: int | None = None  # just past its closing marks, or its line
        self.full = ""  # the full-width marks it ended with: more of them after it are dropped
        self.candidates = [*self.said, *self.recent]  # what it may be repeating
        self.run = 0  # how many times in a row its last character came
        self.echoes = [0] * (MAX_PERIOD + 1)  # per length p: its last characters equal to those p before
        self.held = 0  # where a piece said again right after itself begins its second time

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
        if self.code:
            out = self._close() if self.text else ""
            if self.looped:
                self.left_out += 1
                return out
            self._fence(char)
            return out + char
        # After its end, a sentence goes on with spaces and its own full-width marks.
        if self.end is not None and not char.isspace() and char not in self.full:
            out = self._close()
            if self.looped:
                self.left_out += 1
                return out
        elif self.end is None and char.isspace() and (stops := _LATIN_STOPS.search(self.text[-8:])):
            if stops.group() != "." or self._dot_ends(char):
                self.end = len(self.text)
        previous = self.text[-1:]
        self.text += char
        self._fence(char)
        n = len(self.text)
        if self.end is None:
            if char in _FULL_STOPS or char == "\n":
                self.end, self.full = n, char.strip()
            elif char.isalnum():
                self.words += char.lower()
                at = len(self.words) - 1
                self.candidates = [c for c in self.candidates if len(c) > at and c[at] == self.words[at]]
        elif char in _FULL_STOPS and self.end == n - 1:
            self.end, self.full = n, self.full + char  # "！！": one sentence's marks
        self.run = self.run + 1 if char == previous else 1
        if self.run > MAX_RUN and _loops_as_run(char):
            return out + self._loop(n - self.run + KEEP_RUN)
        cut = self._echo(n)
        return out + (self._loop(cut) if cut is not None else self._pass())

    def _fence(self, char: str) -> None:
        """Follows the lines for ``` fences: code inside them passes untouched."""
        if char != "\n":
            self.line += char
            return
        if self.line.lstrip().startswith("```"):
            self.code = not self.code
        self.line = ""

    def _dot_ends(self, space: str) -> bool:
        """Whether the "." just written ends the sentence, `space` coming after it: not after
        an abbreviation or a single letter ("Mr.", "U.S.", "a.m."), unless the line ends."""
        if space == "\n":
            return True
        token = word_before(self.text[-12:-1])
        return not (token in ABBREVIATIONS or len(token) == 1 or "." in token)

    def _looping_piece(self, first: int, p: int) -> bool:
        """Whether the piece of `p` characters before `first`, said again right after itself, may
        be a loop: it holds a letter, is not one letter over and over, and is not a table's."""
        piece = self.text[first - p : first]
        return bool(_LETTER.search(piece)) and len(set(piece)) > 1 and "|" not in piece

    def _echo(self, n: int) -> int | None:
        """Counts the last character's echoes; where the sentence now ends in a piece said back
        to back often enough to be a loop, the length that keeps it once. Notes in `held` where
        a piece said again right after itself begins its second time (it may be looping)."""
        text, loop, self.held = self.text, None, n
        for p in range(2, min(MAX_PERIOD, n - 1) + 1):
            self.echoes[p] = echoes = self.echoes[p] + 1 if text[-1] == text[-1 - p] else 0
            if echoes and self._looping_piece(n - echoes, p):
                self.held = min(self.held, n - echoes)
                if echoes + p >= p * (4 if p >= LONG else 6):
                    loop = max(loop or 0, n - echoes)
        return loop

    def _pass(self) -> str:
        """The sentence so far, up to its closing marks, unless it may be becoming a repeat or
        a loop (held until it cannot)."""
        if not self.words or self.candidates:
            return ""
        n = len(self.text)
        upto = n if self.end is None else self.end
        if self.run > KEEP_RUN and _loops_as_run(self.text[-1]):  # a run that may not end
            upto = min(upto, n - self.run + KEEP_RUN)
        upto = min(upto, self.held)  # said again right after itself: may loop
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

    def _repeats(self, key: str, words: str) -> bool:
        """Whether the sentence ends a loop: it and the one or two before it repeat those before
        them, or it is a long one said already."""
        keys = [*self.keys, key]
        periodic = any(keys[-k:] == keys[-2 * k : -k] for k in range(1, PERIODS + 1) if len(keys) >= 2 * k)
        return periodic or (len(words) >= LONG_SENTENCE and words in self.said)

    def _close(self) -> str:
        """The sentence is complete: what is left of it and the spaces after its marks (the
        marks piled there dropped), or nothing if it ends a loop or is nothing but marks."""
        text, words = self.text, self.words
        upto = len(text) if self.end is None else self.end
        key = _key(text[:upto])
        repeat = bool(words) and self._repeats(key, words)
        if repeat or not text.strip().strip("".join(_FULL_STOPS) + "!?"):
            self.left_out += len(text) - self.passed
            self.looped = repeat
            self._start()
            return ""
        space = re.match(r"\s*", text[upto:]).group()  # type: ignore[union-attr]
        out = text[self.passed : upto] + space
        self.left_out += len(text) - self.passed - len(out)
        if words:
            self.keys.append(key)
            self.recent = [*self.recent, words][-PERIODS:]
            if len(words) >= LONG_SENTENCE:
                self.said.add(words)
        self._start()
        return out
