"""A model's loops, taken out of its answer while it streams.

A small model falls into loops, the more so outside English: SmolLM2 greeted with "你好！"
answered "你好！！\\n\\n！！！\\n\\n你好！！\\n\\n你好！！…" and then a run of "＃" up to its
token limit, and "谢谢老师！" got "谢谢" and four hundred "！". Shown and spoken, that is worse
than a short answer. `Repeats` passes the answer on as it streams, except that:

- a sentence the answer already said ends it (and is not passed on): a model that repeats a
  sentence word for word is looping, and everything after is the loop. A sentence of fewer
  than `SHORT` letters ("Mr.", "e.") counts only right after itself ("P.S. P.S.");
- closing marks after the first ones ("你好！！\n\n！！！") are left out;
- a character repeated more than `MAX_RUN` times in a row ends it, after `KEEP_RUN` of them
  (runs of "_", "-", "=", "*" or "#" are left alone: blanks to fill in and Markdown);
- words repeated back to back inside a sentence ("美女美女美女美女…", "，用于生命空氣，用于
  生命空氣…", 'The answer is "The answer is "…') end it after the first: three times for a
  piece of `LONG` characters or more, four for a shorter one (not a word then: "谢谢谢谢").

While the sentence being written could still become one already said (what it has so far
begins one), or words it has just said twice may be looping, it is held back; the moment it
cannot, it flows on. Everything else streams
unchanged, so the first words reach the voice as soon as before.
"""

from __future__ import annotations

import re

MAX_RUN = 5
KEEP_RUN = 3
SHORT = 4
LONG = 4
MAX_PERIOD = 40  # the longest piece a loop inside a sentence is looked for as
# A sentence ends at its first closing marks ("." only before a space: not 3.5 or e.g.); the
# spaces and marks after them are its tail, and the next word begins the next sentence.
_END = re.compile(r"(?:[。！？!?；;]|\.(?=\s))+|\n")
_MARKS = frozenset("。！？!?；;.")
_RUN = re.compile(r"([^\s_\-=*#])\1*$")
_NOT_WORDS = re.compile(r"[\W_]+")
_WORD = re.compile(r"[^\W_]")


def _words(text: str) -> str:
    return _NOT_WORDS.sub("", text).lower()


class Repeats:
    """Push the model's pieces in; what comes out is the answer without its loops. `looped`
    turns true when the rest of the answer is a loop: stop the model then."""

    def __init__(self) -> None:
        self.said: set[str] = set()
        self.last = ""  # the words of the sentence before
        self.sentence = ""  # the sentence being written, passed on up to `passed`
        self.passed = 0
        # For each length p: how many of the sentence's last characters equal the one p before.
        self.echoes = [0] * (MAX_PERIOD + 1)
        self.left_out = 0  # characters the model wrote that were not passed on
        self.looped = False

    def push(self, piece: str) -> str:
        out = []
        for char in piece:
            if self.looped:
                self.left_out += 1
                continue
            if not char.isspace() and char not in _MARKS and (end := _END.search(self.sentence)):
                out.append(self._close(end.end()))
                if self.looped:
                    self.left_out += 1
                    continue
            self.sentence += char
            run = _RUN.search(self.sentence)
            if run and len(run.group()) > MAX_RUN:
                self.sentence = self.sentence[: run.start() + KEEP_RUN]
                self.left_out += MAX_RUN + 1 - KEEP_RUN
                self.looped = True
            elif (loop := self._echo()) is not None:
                self.left_out += len(self.sentence) - loop
                self.sentence, self.looped = self.sentence[:loop], True
            out.append(self._pass())
        return "".join(out)

    def _echo(self) -> int | None:
        """Counts the last character's echoes; where the sentence now ends in words said back to
        back often enough to be a loop, the length that keeps them once."""
        sentence, n = self.sentence, len(self.sentence)
        loop = None
        for p in range(2, min(MAX_PERIOD, n - 1) + 1):
            self.echoes[p] = self.echoes[p] + 1 if sentence[-1] == sentence[-1 - p] else 0
            times = (self.echoes[p] + p) / p
            if times >= (3 if p >= LONG else 4) and _WORD.search(sentence[n - self.echoes[p] - p : n - self.echoes[p]]):
                loop = n - self.echoes[p]
        return loop

    def _held_echo(self, upto: int) -> int:
        """`upto`, or where words begin to be said again right after themselves (may be a loop)."""
        n = len(self.sentence)
        for p in range(2, min(MAX_PERIOD, n - 1) + 1):
            if self.echoes[p] and _WORD.search(self.sentence[n - self.echoes[p] - p : n - self.echoes[p]]):
                upto = min(upto, n - self.echoes[p])
        return upto

    def flush(self) -> str:
        """What is held at the end of the answer."""
        if self.looped:
            return ""
        end = _END.search(self.sentence)
        return self._close(end.end() if end else len(self.sentence))

    def _pass(self) -> str:
        """The sentence so far, up to its closing marks, unless it may be becoming a repeat."""
        end = _END.search(self.sentence)
        upto = end.end() if end else len(self.sentence)
        run = _RUN.search(self.sentence[:upto])
        if run and len(run.group()) > KEEP_RUN:  # perhaps a run that does not end
            upto = run.start() + KEEP_RUN
        if not self.looped:
            upto = self._held_echo(upto)
        words = _words(self.sentence[:upto])
        if not words or any(seen.startswith(words) for seen in (*self.said, self.last)):
            return ""
        out, self.passed = self.sentence[self.passed : upto], max(self.passed, upto)
        return out

    def _close(self, upto: int) -> str:
        """The sentence is complete: what is left of it up to `upto` and the spaces after (the
        marks there dropped), or nothing if it has no words or repeats one."""
        sentence, words = self.sentence, _words(self.sentence[:upto])
        self.sentence, passed, self.passed = "", self.passed, 0
        self.echoes = [0] * (MAX_PERIOD + 1)
        if words and (words == self.last if len(words) < SHORT else words in self.said):
            self.left_out += len(sentence) - passed
            self.looped = True
            return ""
        if not sentence.strip().strip("".join(_MARKS)):  # nothing but closing marks
            self.left_out += len(sentence) - passed
            return ""
        space = re.match(r"\s*", sentence[upto:]).group()
        self.left_out += len(sentence) - upto - len(space)
        if words:
            self.last = words
        if len(words) >= SHORT:
            self.said.add(words)
        return sentence[passed:upto] + space
