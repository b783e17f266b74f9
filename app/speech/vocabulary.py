"""The course's own words, heard: where Whisper wrote a homophone of the material's terms.

Whisper base hears a Chinese course's rare terms as common words that sound the same: 放线菌酮
(fàng xiàn jūn tóng) as 放线菌同, 罗保铭担任 as 罗保名单认. The material the question is about is
known (retrieval finds it from the words as first heard, homophones and all: most characters
are right), and pinyin says which of its words sound like what was written. Two uses:

- `sounds_near`: the heard words hold a span that is not in the material but sounds like one
  of its spans (two characters or more, one at least the same): worth hearing again, with the
  material's closest sentences before the audio as Whisper's prompt (`context`);
- `mend`: what was heard, with every longer such span (three characters or more) written as
  the material writes it.

`hear` does both for a question. Only material the retrieval gate lets through is used: heard
again with passages on another subject, Whisper writes their words into the question (with the
gate off, CMRC questions 0-119 went from 15 % to 17 % of characters wrong).
Pinyin comes from `pypinyin` (pure Python, its own dictionary), read once per passage.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from dataclasses import dataclass, fields, replace

import numpy as np

from app.core.engines import ASR, ListenFor, Transcript
from app.core.media import PCM
from app.speech.vad import HAN

log = logging.getLogger(__name__)

# What a character costs when it stands for another: written the same, the same syllable and
# tone, another tone, a sound Mandarin speakers (and Whisper) confuse (zh/z, an/ang, …).
SAME, HOMOPHONE, OTHER_TONE, NEAR = 0.0, 0.2, 0.35, 0.6
# A span is mended when its characters cost at most this much each on average; so every
# changed character must sound like the one it replaces, and most must be true homophones.
MAX_COST = 0.3
MEND_MIN, NEAR_MIN, LONGEST = 3, 2, 8
_FUZZY_INITIALS = (("zh", "z"), ("ch", "c"), ("sh", "s"), ("n", "l"))
_FUZZY_FINALS = (("ang", "an"), ("eng", "en"), ("ing", "in"))
_INITIALS = ("zh", "ch", "sh", *"bpmfdtnlgkhjqxrzcsyw")
_BRACKETS = re.compile(r"[()（）《》〈〉\[\]【】「」『』“”\"'‘’]")
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;\n])")


@dataclass(frozen=True)
class Near:
    """heard[start:end] sounds like `written`, a span of the material."""

    start: int
    end: int
    written: str
    cost: float


@dataclass(frozen=True)
class _Sounds:
    """A text's characters as numbers: the character, its syllable, tone and fuzzy syllable
    (0 where it is not a Chinese character)."""

    chars: np.ndarray
    syllables: np.ndarray
    tones: np.ndarray
    fuzzy: np.ndarray
    han: np.ndarray


_IDS: dict[str, int] = {}


def _id(key: str) -> int:
    return _IDS.setdefault(key, len(_IDS) + 1)


def _fuzzy(syllable: str) -> str:
    initial = next((i for i in _INITIALS if syllable.startswith(i)), "")
    final = syllable[len(initial) :]
    initial = dict(_FUZZY_INITIALS).get(initial, initial)
    return initial + "-" + dict(_FUZZY_FINALS).get(final, final)


def warmup() -> None:
    """pypinyin loads its dictionaries on first use (~1.4 s): before the first question."""
    _sounds("中文")


@functools.lru_cache(maxsize=512)  # the passages a course's questions keep finding
def _sounds(text: str) -> _Sounds:
    from pypinyin import Style, lazy_pinyin

    readings = lazy_pinyin(text, style=Style.TONE3, errors=lambda chunk: [""] * len(chunk))
    if len(readings) != len(text):  # pypinyin split something its own way: read one by one
        readings = [lazy_pinyin(c, style=Style.TONE3, errors=lambda _: [""])[0] if HAN.match(c) else "" for c in text]
    syllables, tones, fuzzy, han = [], [], [], []
    for char, reading in zip(text, readings, strict=True):
        chinese = bool(reading) and bool(HAN.match(char))
        plain = reading.rstrip("012345") if chinese else ""
        syllables.append(_id(plain) if chinese else 0)
        tones.append(int(reading[-1]) if chinese and reading[-1].isdigit() else 5)
        fuzzy.append(_id(_fuzzy(plain)) if chinese else 0)
        han.append(chinese)
    return _Sounds(
        np.array([ord(c) for c in text], dtype=np.int32),
        np.array(syllables, dtype=np.int32),
        np.array(tones, dtype=np.int8),
        np.array(fuzzy, dtype=np.int32),
        np.array(han, dtype=bool),
    )


def _joined(passages: list[_Sounds]) -> _Sounds:
    """Passages read one by one (each is read once, as retrieval finds it again and again),
    joined as "\n".join joins their text."""
    parts = [part for passage in passages for part in (passage, _sounds("\n"))][:-1]
    return _Sounds(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(_Sounds)))


def _costs(heard: _Sounds, material: _Sounds) -> np.ndarray:
    """What each heard character costs as each character of the material (inf: no match)."""
    same = heard.chars[:, None] == material.chars[None, :]
    both = heard.han[:, None] & material.han[None, :]
    syllable = both & (heard.syllables[:, None] == material.syllables[None, :])
    tone = heard.tones[:, None] == material.tones[None, :]
    fuzzy = both & (heard.fuzzy[:, None] == material.fuzzy[None, :])
    costs = np.full(same.shape, np.inf)
    costs[fuzzy] = NEAR
    costs[syllable] = OTHER_TONE
    costs[syllable & tone] = HOMOPHONE
    costs[same] = SAME
    return costs


def nears(heard: str, material: list[str], shortest: int = NEAR_MIN) -> list[Near]:
    """Spans of `heard` (Chinese characters only, `shortest` or longer) that are not in the
    material but sound like a span of it, one character at least written the same; for each
    start and length the closest."""
    text = "\n".join(material)
    if not heard or not text:
        return []
    spoken, written = _sounds(heard), _joined([_sounds(p) for p in material])
    costs = _costs(spoken, written)
    same = costs == SAME
    found = []
    total = np.zeros_like(costs)
    alike = np.zeros(costs.shape, dtype=np.int64)
    for length in range(1, min(LONGEST, len(heard), len(text)) + 1):
        rows, cols = len(heard) - length + 1, len(text) - length + 1
        total = total[:rows, :cols] + costs[length - 1 :, length - 1 :][:rows, :cols]
        alike = alike[:rows, :cols] + same[length - 1 :, length - 1 :][:rows, :cols]
        if length < shortest:
            continue
        for start in range(rows):
            if not spoken.han[start : start + length].all() or (alike[start] == length).any():
                continue  # not all Chinese, or written so in the material already
            close = (total[start] <= MAX_COST * length) & (alike[start] > 0)
            if close.any():
                best = int(np.argmin(np.where(close, total[start], np.inf)))
                found.append(Near(start, start + length, text[best : best + length], float(total[start, best])))
    return found


def sounds_near(heard: str, material: list[str]) -> bool:
    """Whether the heard words hold a homophone of the material's (worth hearing again)."""
    return bool(nears(heard, material))


def mend(heard: str, material: list[str]) -> str:
    """The heard words, their longer homophones of the material written as it writes them;
    longest first, then closest, never two over the same character."""
    chosen = sorted(nears(heard, material, MEND_MIN), key=lambda n: (n.start - n.end, n.cost))
    taken = [False] * len(heard)
    mended = list(heard)
    for near in chosen:
        if any(taken[near.start : near.end]):
            continue
        taken[near.start : near.end] = [True] * (near.end - near.start)
        mended[near.start : near.end] = near.written
    return "".join(mended)


def context(heard: str, material: list[str], budget: int = 150) -> str:
    """The material's sentences that share most characters and character pairs with the heard
    words, up to `budget` characters: the text Whisper reads before the audio when it hears
    the question again. Brackets and quotes out: Whisper copies them into what it writes."""
    grams = lambda s: set(s) | {s[i : i + 2] for i in range(len(s) - 1)}  # noqa: E731
    wanted = grams(heard)
    sentences = [s.strip() for passage in material for s in _SENTENCE_END.split(passage) if s.strip()]
    chosen, used = [], 0
    for sentence in sorted(sentences, key=lambda s: -len(wanted & grams(s))):
        if used + len(sentence) <= budget:
            chosen.append(sentence)
            used += len(sentence)
    return _BRACKETS.sub("", "".join(chosen))


def hear(asr: ASR, pcm: PCM, listen: ListenFor) -> Transcript:
    """A question's words. A Chinese one whose words sound like the course material's but are
    written otherwise is heard again with the material's closest sentences as the recogniser's
    hint, and its longer homophones are then written as the material writes them."""
    started = time.perf_counter()
    first = asr.transcribe(pcm, listen.language, listen.hint, listen.traditional)
    if listen.material is None or first.language != "zh" or not first.text:
        return first
    try:
        material = listen.material(first.text)
    except Exception as exc:  # the material is a help, never a reason to lose the question
        log.warning("the course's material could not be searched (%s); the question stands as first heard", exc)
        return first
    if not material or not sounds_near(first.text, material):
        return first
    again = asr.transcribe(pcm, first.language, context(first.text, material), listen.traditional)
    text = mend(again.text, material) if again.text else first.text
    elapsed = (time.perf_counter() - started) * 1000
    return replace(first, text=text, elapsed_ms=elapsed, first_heard=first.text if text != first.text else "")
