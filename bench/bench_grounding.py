"""Grounded answers: correct, declined and cited on SQuAD 2.0 train, through a real server.

    python -m bench.bench_grounding --squad path/to/train-v2.0.json [--questions 30] [--seed 1]

A tutor's knowledge base holds whole Wikipedia articles of SQuAD 2.0's **train** split (one
document each), the held-out article without every fourth paragraph. A student asks it, over
the WebSocket as any client does, `--questions` answerable and as many unanswerable questions
drawn (seeded) from the held-out article's paragraphs in the course, and as many answerable
ones from those left out; each question is the first of its own chat. SQuAD 2.0's unanswerable
questions were written against the same paragraphs to look answerable, so they test the
decline honestly; the left-out paragraphs' questions are what a student asks about the course's
topic beyond the course.

- correct: a gold answer span is in the answer (lower case, punctuation and articles removed);
- declined: the tutor said the material does not cover it (unanswerable questions);
- uncovered declined: the same for questions on the left-out paragraphs;
- cited when answered / cited when declined: the answer carried sources.

Two tiers, the same code path: `embedded` (the local model: grounded answers are quoted) and
`ollama` (an Ollama-speaking server over the same local model, which phrases the evidence, and
the support check keeps what the material says). `decisions_agree`: the share of questions both
tiers answered or declined alike. The grounder's weights were fitted on other articles of the
same split (Twilight Princess, IPod): the held-out article (Spectre) and the distractors were
not looked at while tuning. The data set is not committed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import string
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

from app.conversation.prompt import NOT_COVERED
from bench.common import latency_summary, report
from tests.kit.live import LiveServer, collect_answer, make_settings, new_session, new_tutor
from tests.kit.ollama import FakeOllama
from tutors.llm.local import LocalLLM

HELD_OUT = "Spectre_(2015_film)"
DISTRACTORS = ("Solar_energy", "To_Kill_a_Mockingbird")


def normalise(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


# Every fourth paragraph of the held-out article is left out of the course: the answerable
# questions on it ask about the course's topic what the course does not say ("uncovered").
LEFT_OUT = 4


def _left_out(n: int) -> bool:
    return n % LEFT_OUT == LEFT_OUT - 1


def questions(article: dict[str, Any], count: int, seed: int) -> list[dict[str, Any]]:
    asked: dict[str, list[dict[str, Any]]] = {"answerable": [], "unanswerable": [], "uncovered": []}
    for n, paragraph in enumerate(article["paragraphs"]):
        for qa in paragraph["qas"]:
            entry = {"question": qa["question"], "answers": [a["text"] for a in qa["answers"]]}
            if _left_out(n):
                if not qa["is_impossible"]:
                    asked["uncovered"].append(entry)
            else:
                asked["unanswerable" if qa["is_impossible"] else "answerable"].append(entry)
    rng = random.Random(seed)
    return [{**q, "kind": kind} for kind, some in asked.items() for q in rng.sample(some, min(count, len(some)))]


def document(article: dict[str, Any], held_out: bool) -> bytes:
    title = article["title"].replace("_", " ")
    kept = [p["context"] for n, p in enumerate(article["paragraphs"]) if not (held_out and _left_out(n))]
    return (f"# {title}\n\n" + "\n\n".join(kept)).encode()


async def ask_all(server: LiveServer, kb_id: str, asked: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with server.client() as client:
        tutor = new_tutor(client, "Grounded", subject="film, solar energy and literature", kb_ids=[kb_id])
        session = new_session(client, tutor["id"])
    results = []
    async with websockets.connect(f"{session['engine_url']}?token={session['engine_token']}") as ws:
        for chat, entry in enumerate(asked):
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "text", "content": entry["question"], "session_id": chat}))
            final = (await collect_answer(ws, timeout=120))[-1]
            assert final["type"] == "text", final
            answer = final["content"]
            declined = answer == NOT_COVERED["en"]
            results.append(
                {
                    **entry,
                    "answer": answer,
                    "declined": declined,
                    "cited": bool(final.get("sources")),
                    # Not declined: a one-letter answer ("M", Bond's chief) is in any sentence.
                    "correct": not declined
                    and any(normalise(a) in normalise(answer) for a in entry["answers"] if normalise(a)),
                    "ms": (time.perf_counter() - started) * 1000,
                }
            )
    return results


def run_tier(name: str, articles: list[dict[str, Any]], asked: list[dict[str, Any]], **settings: Any) -> list[dict]:
    server = LiveServer(make_settings(Path(tempfile.mkdtemp(prefix="vt-ground-")), **settings)).start()
    try:
        with server.client() as client:
            kb = client.post("/v1/kbs", json={"name": "Wikipedia"}).json()
            for article in articles:
                held_out = article is articles[0]  # the questions' article comes first
                files = {"file": (f"{article['title']}.md", document(article, held_out), "text/markdown")}
                response = client.post(f"/v1/kbs/{kb['id']}/documents", files=files)
                assert response.status_code in (200, 201, 202), response.text
            while any(d["status"] != "ready" for d in client.get(f"/v1/kbs/{kb['id']}/documents").json()):
                time.sleep(0.5)
        return asyncio.run(ask_all(server, kb["id"], asked))
    finally:
        server.stop()


QUESTION_KINDS = ("answerable", "unanswerable", "uncovered")


def summarise(tier: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    answerable, unanswerable, uncovered = ([r for r in results if r["kind"] == k] for k in QUESTION_KINDS)
    answered = [r for r in results if not r["declined"]]
    declined = [r for r in results if r["declined"]]

    def share(part: list[Any], whole: list[Any]) -> float:
        return round(len(part) / len(whole), 3) if whole else float("nan")

    return {
        "tier": tier,
        "answerable": len(answerable),
        "correct": share([r for r in answerable if r["correct"]], answerable),
        "answerable_declined": share([r for r in answerable if r["declined"]], answerable),
        "unanswerable": len(unanswerable),
        "declined": share([r for r in unanswerable if r["declined"]], unanswerable),
        "uncovered": len(uncovered),
        "uncovered_declined": share([r for r in uncovered if r["declined"]], uncovered),
        # The rest of the article may say it too: such an answer is right, though not declined.
        "uncovered_correct": share([r for r in uncovered if r["correct"]], uncovered),
        "cited_when_answered": share([r for r in answered if r["cited"]], answered),
        "cited_when_declined": share([r for r in declined if r["cited"]], declined),
        "turn_p50_ms": latency_summary([r["ms"] for r in results])["p50_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--squad", type=Path, required=True, help="SQuAD 2.0 train-v2.0.json (train split only)")
    parser.add_argument(
        "--questions", type=int, default=30, help="answerable, unanswerable and uncovered questions each"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tiers", default="embedded,ollama")
    parser.add_argument("--held-out", default=HELD_OUT, help="the article the questions come from")
    parser.add_argument("--distractors", default=",".join(DISTRACTORS), help="other articles in the KB")
    parser.add_argument("--name", default="grounding", help="bench/results/<name>.json")
    args = parser.parse_args()

    by_title = {a["title"]: a for a in json.loads(args.squad.read_text())["data"]}
    distractors = args.distractors.split(",")
    articles = [by_title[t] for t in (args.held_out, *distractors)]
    asked = questions(by_title[args.held_out], args.questions, args.seed)
    per_tier: dict[str, list[dict[str, Any]]] = {}
    for tier in args.tiers.split(","):
        if tier == "embedded":
            per_tier[tier] = run_tier(tier, articles, asked, llm_engine="local")
        else:
            fake = FakeOllama(LocalLLM(), models=["smollm2:135m"]).start()
            try:
                per_tier[tier] = run_tier(
                    tier,
                    articles,
                    asked,
                    llm_engine="ollama",
                    ollama_base_url=fake.url,
                    default_llm_model="smollm2:135m",
                )
            finally:
                fake.stop()
    rows = [summarise(tier, results) for tier, results in per_tier.items()]
    if len(per_tier) == 2:
        first, second = per_tier.values()
        agree = sum(a["declined"] == b["declined"] for a, b in zip(first, second, strict=True)) / len(first)
        for row in rows:
            row["decisions_agree"] = round(agree, 3)
    report(
        args.name,
        rows,
        {
            "data_set": f"SQuAD 2.0 train: questions from {args.held_out}, KB of it + {' + '.join(distractors)}",
            "seed": args.seed,
            "answers": per_tier,
        },
    )


if __name__ == "__main__":
    main()
