"""The LLM stage: the embedded model's speed, and how fast a dead Ollama is noticed.

    python -m bench.bench_llm [--runs 5] [--cmrc cmrc2018_trial.json [--first 40 --count 40]]

1. Embedded model (SmolLM2-135M on llama.cpp, CPU): time to first token and tokens/s for a
   short question after a ~500-token context (persona + history). Target: TTFT <= 1.0 s,
   >= 20 tokens/s.
2. Fallback switch: time from a turn's start to the first piece of the fallback's answer (the
   notice) when Ollama refuses connections, and when it is black-holed (SYNs unanswered).
   Target: <= 2 s.
3. Answer language (`--cmrc`, CMRC 2018 trial, fetched, never committed): CMRC questions put to
   a Chinese tutor with no material, answered by the embedded model, the prompt asking for
   Chinese in English only or in Chinese too. Per prompt: the answers `KeepLanguage` passes,
   those it withholds (the tutor apologises instead), and those too short to tell. English
   questions to an English tutor as the control.
4. Loops (`--cmrc`, the first `--loop-count` of the same questions): answers of up to
   `LLM_MAX_TOKENS` (384), at the app's temperature, read by `Repeats` as the `Generate` stage
   reads them: how many loop, and the tokens and seconds spent before the stage would have
   stopped the model, against the whole answer. The English tutor as the control.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from app.conversation.language import written_in
from app.conversation.prompt import StoredMessage, fit_prompt, system_prompt
from app.conversation.repeats import Repeats
from app.core.engines import GenerationOptions, Notice
from app.core.settings import Settings
from bench.common import free_port, report
from tests.kit.live import BlackHole
from tutors.llm.fallback import FallbackLLM
from tutors.llm.local import LocalLLM
from tutors.llm.ollama_engine import OllamaLLM
from tutors.store import Tutor

PERSONA = Tutor(id=1, name="Ada", subject="biology", persona="You explain biology to 14-year-olds, with one example.")
HISTORY = [
    StoredMessage("user", "What is a cell? I keep hearing the word in class but I do not get it."),
    StoredMessage(
        "assistant",
        "A cell is the smallest living unit. Your body has trillions of them: skin cells, "
        "blood cells, nerve cells. Each has a membrane, a nucleus with DNA, and mitochondria for energy.",
    ),
] * 5


# A teacher's persona as teachers write them (~300 tokens): the head of every prompt of theirs.
LONG_PERSONA = (
    "You teach biology to a class of fourteen-year-olds in their second year of secondary school. "
    "Many of them find science hard and some are learning in their second language, so use short "
    "sentences and everyday words, and explain any technical term the first time you use it. "
    "Always give one concrete example from daily life: cooking, sport, the human body, the garden. "
    "When a student is wrong, say what is right in their answer first, then correct the rest gently. "
    "Never give the answer to a homework question outright: ask a guiding question back instead. "
    "If a question is not about biology, say kindly that you only help with biology. "
    "Follow the school's curriculum: cells and organisation, nutrition and digestion, respiration, "
    "photosynthesis, the circulatory system, ecosystems, genetics and inheritance, and evolution. "
    "Use metric units. Encourage students to draw diagrams and to check their ideas by experiment. "
    "End every answer with a short question that checks the student understood, unless they said "
    "they have to go. Be warm and patient, and never make a student feel foolish for asking."
)
QUESTIONS = [
    "So what does a mitochondrion do?",
    "And the nucleus?",
    "Do plant cells differ?",
    "What is a membrane made of?",
    "How big is a cell?",
    "Why do cells divide?",
]


async def timed(engine: LocalLLM, messages: list, max_tokens: int = 96) -> tuple[float, int, float, str]:
    started = time.perf_counter()
    first = None
    pieces = []
    async for piece in engine.stream(messages, GenerationOptions(None, 0.4, max_tokens)):
        first = first or time.perf_counter()
        pieces.append(piece)
    done = time.perf_counter()
    return first - started, len(pieces), (len(pieces) - 1) / (done - first), "".join(pieces)


async def measured(engine: LocalLLM, case: str, run: int, messages: list) -> tuple[dict, str]:
    """One timed answer as a table row, and the answer."""
    ttft, tokens, rate, answer = await timed(engine, messages)
    row = {
        "case": case,
        "run": run,
        "content_tokens": sum(engine.count_tokens(m.content) for m in messages),
        "reused_tokens": engine.last_reused_tokens,
        "ttft_s": round(ttft, 3),
        "tokens": tokens,
        "tokens_per_s": round(rate, 1),
    }
    return row, answer


async def embedded(runs: int) -> list[dict]:
    engine = LocalLLM()
    engine.warmup()
    await timed(engine, fit_prompt(engine, "Warm-up.", [], "Hi", reserve=16), 4)  # allocate a context
    rows = []
    # Cold: a ~500-token prompt nothing is cached for (a new tutor, or after a restart).
    for run in range(1, runs + 1):
        persona = system_prompt(PERSONA) + f" (class {run})"
        cold = [StoredMessage(m.role, f"[{run}] {m.content}") for m in HISTORY]
        messages = fit_prompt(engine, persona, cold, QUESTIONS[0], reserve=128)
        row, _ = await measured(engine, "cold prompt", run, messages)
        rows.append(row)
    # A new session's first turn, with a teacher's long persona: nothing cached (a new tutor,
    # a restart), then the same kind of prompt prepared beforehand (the server does it at
    # start-up, when a student connects or picks the tutor, and when a teacher edits it).
    for run in range(1, runs + 1):
        fresh = LocalLLM()
        fresh.warmup()
        for case, tag in (("first turn, cold", "a"), ("first turn, prepared", "b")):
            tutor = Tutor(id=2, name="Ada", subject="biology", persona=f"{LONG_PERSONA} (class {run}{tag})")
            messages = fit_prompt(fresh, system_prompt(tutor), [], QUESTIONS[0], reserve=128)
            if tag == "b":
                await fresh.prepare(messages[:1])
            row, _ = await measured(fresh, case, run, messages)
            rows.append(row)
    # The same ~500-token conversation after a restart, prepared at start-up as the server does
    # (its history, without the question nobody has asked yet).
    for run in range(1, runs + 1):
        fresh = LocalLLM()
        fresh.warmup()
        persona = system_prompt(PERSONA) + f" (class {run})"
        history = [StoredMessage(m.role, f"[{run}] {m.content}") for m in HISTORY]
        messages = fit_prompt(fresh, persona, history, QUESTIONS[0], reserve=128)
        await fresh.prepare(messages[:-1])
        row, _ = await measured(fresh, "cold prompt, prepared", run, messages)
        rows.append(row)
    # A conversation: each turn is the previous prompt plus the answer and a new question.
    history = list(HISTORY)
    for turn, question in enumerate(QUESTIONS[: runs + 1], start=1):
        messages = fit_prompt(engine, system_prompt(PERSONA), history, question, reserve=128)
        row, answer = await measured(engine, "conversation turn", turn, messages)
        history += [StoredMessage("user", question), StoredMessage("assistant", answer)]
        if turn > 1:  # the conversation's first turn is a cold prompt, measured above
            rows.append(row)
    return rows


async def switch_time(url: str, local: LocalLLM) -> float:
    ollama = OllamaLLM(url, connect_timeout=1.5, context_window=4096, default_model="qwen2.5:7b")
    engine = FallbackLLM(ollama, local, probe_seconds=15)
    messages = fit_prompt(local, system_prompt(PERSONA), [], "Hi!", reserve=64)
    started = time.perf_counter()
    stream = engine.stream(messages, GenerationOptions("qwen2.5:7b", 0.4, 8))
    async for piece in stream:
        if isinstance(piece, Notice):
            elapsed = time.perf_counter() - started
            await stream.aclose()
            return elapsed
    raise RuntimeError("no fallback happened")


async def fallback(runs: int) -> list[dict]:
    local = LocalLLM()
    local.warmup()
    rows = []
    refused = [await switch_time(f"http://127.0.0.1:{free_port()}", local) for _ in range(runs)]
    with BlackHole() as url:
        holed = [await switch_time(url, local) for _ in range(runs)]
    for name, times in (("connection refused", refused), ("black-holed", holed)):
        rows.append(
            {
                "ollama": name,
                "runs": runs,
                "median_s": round(statistics.median(times), 3),
                "max_s": round(max(times), 3),
                "meets_target": max(times) <= 2.0,
            }
        )
    return rows


CHINESE_TUTOR = Tutor(id=2, name="李老师", subject="通识课", language="zh")
IN_CHINESE = "请只用简体中文回答。"


def _share(verdicts: list[bool | None], verdict: bool | None) -> float:
    return round(100 * verdicts.count(verdict) / len(verdicts), 1)


async def answer_language(path: Path, first: int, count: int) -> list[dict]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    asked = [q["question"].strip() for a in data for p in a["paragraphs"] for q in p["qas"]][first : first + count]
    engine = LocalLLM()
    engine.warmup()
    chinese = system_prompt(CHINESE_TUTOR)
    cases = [
        ("zh tutor, asked for Chinese in English", "zh", chinese.replace(IN_CHINESE + "\n", ""), asked),
        ("zh tutor, asked in Chinese too (shipped)", "zh", chinese, asked),
        ("en tutor, English questions (control)", "en", system_prompt(PERSONA), QUESTIONS * 3),
    ]
    rows = []
    for case, language, system, questions in cases:
        verdicts = []
        for question in questions:
            _, _, _, answer = await timed(engine, fit_prompt(engine, system, [], question, reserve=64), 64)
            verdicts.append(written_in(answer, language))
        rows.append(
            {
                "case": case,
                "answers": len(questions),
                "in_language_pct": _share(verdicts, True),
                "withheld_pct": _share(verdicts, False),  # the tutor's apology instead
                "too_short_to_tell_pct": _share(verdicts, None),
            }
        )
    return rows


async def loops(path: Path, first: int, count: int) -> list[dict]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    asked = [q["question"].strip() for a in data for p in a["paragraphs"] for q in p["qas"]][first : first + count]
    engine = LocalLLM()
    engine.warmup()
    settings = Settings(_env_file=None)
    options = GenerationOptions(None, settings.llm_temperature, settings.llm_max_tokens)
    rows = []
    for case, tutor, questions in (("zh tutor", CHINESE_TUTOR, asked), ("en tutor (control)", PERSONA, QUESTIONS)):
        looped, whole, kept, tokens, stopped, seconds, until = 0, 0, 0, 0, 0, 0.0, 0.0
        for question in questions:
            messages = fit_prompt(engine, system_prompt(tutor), [], question, options.max_tokens)
            repeats, shown, started, stop, pieces = Repeats(), [], time.perf_counter(), None, 0
            async for piece in engine.stream(messages, options):
                pieces += 1
                whole += len(piece)
                if stop is None:
                    shown.append(repeats.push(piece))
                    if repeats.looped:
                        stop = (pieces, time.perf_counter() - started)
            ended = time.perf_counter() - started
            shown.append(repeats.flush())
            looped += repeats.looped
            kept += len("".join(shown))
            tokens += pieces
            stopped += stop[0] if stop else pieces
            seconds += ended
            until += stop[1] if stop else ended
        rows.append(
            {
                "case": case,
                "answers": len(questions),
                "looped_pct": round(100 * looped / len(questions), 1),
                "chars_kept_pct": round(100 * kept / max(1, whole), 1),
                "tokens_per_answer": f"{tokens / len(questions):.0f} → {stopped / len(questions):.0f}",
                "seconds_per_answer": f"{seconds / len(questions):.2f} → {until / len(questions):.2f}",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cmrc", type=Path, help="CMRC 2018 JSON in SQuAD form (e.g. cmrc2018_trial.json)")
    parser.add_argument("--first", type=int, default=40, help="the first CMRC question asked")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--loop-count", type=int, default=20)
    args = parser.parse_args()
    if args.cmrc:
        rows = asyncio.run(answer_language(args.cmrc, args.first, args.count))
        asked = f"CMRC 2018 trial, questions {args.first}-{args.first + args.count - 1}"
        report("llm_language", rows, {"data_set": asked})
        print()
        rows = asyncio.run(loops(args.cmrc, args.first, args.loop_count))
        report(
            "llm_loops",
            rows,
            {"data_set": f"CMRC 2018 trial, questions {args.first}-{args.first + args.loop_count - 1}"},
        )
        print()
    speed = asyncio.run(embedded(args.runs))
    summary = {}
    cases = ("cold prompt", "cold prompt, prepared", "first turn, cold", "first turn, prepared", "conversation turn")
    for case in cases:
        rows = [r for r in speed if r["case"] == case]
        summary[case] = {
            "median_ttft_s": statistics.median(r["ttft_s"] for r in rows),
            "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
        }
    turn = summary["conversation turn"]
    report(
        "llm_embedded",
        speed,
        {
            "summary": summary,
            "target": "TTFT <= 1.0 s and >= 20 tokens/s, short question after ~500 tokens",
            "meets_target_in_conversation": turn["median_ttft_s"] <= 1.0 and turn["median_tokens_per_s"] >= 20,
        },
    )
    for case, figures in summary.items():
        print(f"{case}: median TTFT {figures['median_ttft_s']:.3f} s, {figures['median_tokens_per_s']:.1f} tokens/s")
    print()
    report("llm_fallback", asyncio.run(fallback(args.runs)), {"target": "fallback within 2 s"})


if __name__ == "__main__":
    main()
