"""Whether a piece of an answer is written in the tutor's language, as far as a student can
tell at a glance: Chinese characters for a Chinese tutor, and not mostly Chinese characters
for a tutor in a Latin-script language.

Only the script is read, which is what a small model's drift changes: SmolLM2, asked in
Chinese, answers in English, and a Chinese model asked in English may answer in Chinese.
English terms inside a Chinese sentence ("Python 是一种编程语言") keep it Chinese; a Chinese
term inside an English sentence keeps it English. Japanese and Korean mix Chinese characters
into their own scripts, so for them nothing is judged.
"""

from __future__ import annotations

import re

from app.core.media import primary_language

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+")
_HAN_LANGUAGES = {"zh", "yue", "wuu"}
_NOT_JUDGED = {"ja", "ko"}


def written_in(text: str, language: str | None) -> bool:
    """True unless `text` is plainly in another script than `language` is written in. A
    piece with no letters at all (a number, a citation mark) is in every language."""
    primary = primary_language(language)
    if not primary or primary in _NOT_JUDGED:
        return True
    # A Chinese word is one or two characters: one character counts as much as one word.
    han, latin = len(_HAN.findall(text)), len(_LATIN_WORD.findall(text))
    if primary in _HAN_LANGUAGES:
        return han >= latin
    return han <= 2 * latin
