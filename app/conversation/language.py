"""Whether an answer is written in the tutor's language, as far as a student can tell at a
glance: mostly Chinese characters for a Chinese tutor, mostly not for the others.

Only the script is read, which is what a small model's drift changes: SmolLM2, asked in
Chinese, answers in English, and a Chinese model asked in English may answer in Chinese. The
answer is judged as a whole, not sentence by sentence: a Chinese teacher of English quotes
English example sentences, a physics tutor writes `v = s / t`, a programming tutor shows code,
and none of that is drift. So code (fenced or inline) and one-letter symbols do not count, and
an answer is off its language only when the other script outweighs the tutor's three to one
over at least `EVIDENCE` words. Until then what leans to the tutor's script flows on at once,
and only what leans away waits for the verdict. Japanese and Korean mix Chinese characters into their own
scripts, so for them nothing is judged.
"""

from __future__ import annotations

import re

from app.core.media import primary_language
from app.speech.vad import HAN

HAN_LANGUAGES = frozenset({"zh", "yue", "wuu"})
_NOT_JUDGED = frozenset({"ja", "ko"})
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]{2,}")
_CODE = re.compile(r"```.*?(```|$)|`[^`\n]*`", re.DOTALL)
EVIDENCE = 6  # words (a Chinese character counts as one) before an answer is judged


def words_by_script(text: str) -> tuple[int, int]:
    """(Chinese characters, Latin words of two letters or more) outside code."""
    prose = _CODE.sub(" ", text)
    return len(HAN.findall(prose)), len(_LATIN_WORD.findall(prose))


def judged(language: str | None) -> bool:
    primary = primary_language(language)
    return bool(primary) and primary not in _NOT_JUDGED


def leans_to(text: str, language: str | None) -> bool:
    """Whether `text` so far fits `language`'s script, however few words it has (a language
    whose script is not judged fits always)."""
    if not judged(language):
        return True
    han, latin = words_by_script(text)
    if primary_language(language) in HAN_LANGUAGES:
        return not 3 * han < latin
    return not 3 * latin < han


def written_in(text: str, language: str | None) -> bool | None:
    """True or False once `text` holds enough words to tell; None while it does not (or for a
    language whose script is not judged)."""
    if not judged(language) or sum(words_by_script(text)) < EVIDENCE:
        return None
    return leans_to(text, language)
