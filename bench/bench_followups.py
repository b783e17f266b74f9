"""Follow-up questions: "Where was she born?" after a question on Beyoncé, "它全长多少？" after one on 长城.

    python -m bench.bench_followups --squad train-v2.0.json --cmrc cmrc2018_trial.json [--per-topic 12]

A student's next question leans on the last answer: a pronoun stands for its topic. Alone it
finds nothing, or the wrong thing. The tutor reads it again about the topic of the last answer
that cited the material (`app/conversation/talk.py`); this measures what that reading gives and
what it risks, on the knowledge base service and the grounder the app uses.

Each item is a question that names its topic, made a follow-up by putting a pronoun in the
topic's place ("When did Beyoncé start becoming popular?" → "When did she start becoming
popular?"), asked after another question naming the same topic (turn 1: the topic is its
answer's, or where that was declined, the course's heading or document name it names, as the
app reads the chat with `talk.last_topic`). The kinds:

- covered: the paragraph it was written on is in the course. `correct`: a gold answer in the
  quoted evidence; `wrong`: answered without one;
- uncovered: written on a paragraph left out of the course (every fourth one, as in
  bench_grounding), or SQuAD 2.0's unanswerable questions, or (Chinese) a question on a topic
  not in the course asked with the pronoun after an answer on one that is: `declined` should
  stay high;
- switched: a question naming its own topic, asked after an answer on another: the reading must
  not change it (`correct` as asked alone).

`named` is the question as written, naming its topic (what the student could have asked);
`alone` the follow-up grounded by itself (the tutor before follow-ups were read in context);
`in_context` the follow-up after turn 1, as the app now grounds it.
English: SQuAD 2.0 train, six articles, one Markdown document each under its title. Chinese:
CMRC 2018 trial, 200 paragraphs in 10 documents under their titles (as bench_kb). The reading
has no thresholds, but its one rule (a pronoun question read as asked must name what its
evidence is about) was chosen on these sets; `--held-out` runs three other English articles,
not looked at. The data sets are not committed.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.conversation.talk import course_words, ground_in_context, last_topic
from bench.bench_grounding import LEFT_OUT, normalise
from bench.bench_kb import ingest, service
from bench.common import report
from kb.grounding import Grounding
from kb.service import KnowledgeBases

# An article, the pronoun a student uses for it, and how its questions name it (longest first).
ARTICLES = {
    "Beyoncé": ("she", ("Beyoncé", "Beyonce")),
    "Frédéric_Chopin": ("he", ("Frédéric Chopin", "Chopin")),
    "IPod": ("it", ("the iPod", "iPod")),
    "Spectre_(2015_film)": ("it", ("Spectre",)),
    "To_Kill_a_Mockingbird": ("it", ("To Kill a Mockingbird",)),
    "Solar_energy": ("it", ("solar energy", "Solar energy")),
}
CMRC_INDEXED, CMRC_PER_DOCUMENT = 200, 20
# The question naming its topic (what the student could have asked), the follow-up alone, and
# the follow-up read in context.
HOW = ("named", "alone", "in_context")
# Articles not looked at while the reading was chosen (`--held-out`).
HELD_OUT_ARTICLES = {
    "New_York_City": ("it", ("New York City", "New York", "NYC")),
    "2008_Sichuan_earthquake": ("it", ("the 2008 Sichuan earthquake", "the Sichuan earthquake", "the earthquake")),
    "The_Legend_of_Zelda:_Twilight_Princess": ("it", ("Twilight Princess",)),
}
POSSESSIVE = {"she": "her", "he": "his", "it": "its"}
OBJECT = {"she": "her", "he": "him", "it": "it"}
# Where a student's pronoun can stand for a name: as the subject, after an auxiliary or first
# ("When did she…", "Beyoncé was…"), as an object after a preposition or a verb in the past
# ("Who designed it?"), or as a possessive. A name used as a modifier ("the iPod product",
# "Beyoncé fans") makes no follow-up.
_AUXILIARY = "did does do was is were are has have had will would can could should might"
_PREPOSITION = "of about for with by to in on from after before at against into than"
_SUBJECT_BEFORE = re.compile(rf"(^|\b(?:{'|'.join(_AUXILIARY.split())}) )$", re.IGNORECASE)
_OBJECT_BEFORE = re.compile(rf"\b(?:{'|'.join(_PREPOSITION.split())}|[a-z]+ed)(?: the)? $", re.IGNORECASE)
_VERB_AFTER = re.compile(rf"^ (?:{'|'.join(_AUXILIARY.split())}|[a-z]+(?:ed|s))\b")


@dataclass
class Course:
    """A knowledge base as a turn sees it: what it says to a question, and its topics (the
    app's `course_words`, which it gives `talk.last_topic`)."""

    kbs: KnowledgeBases
    kb_id: str

    def ground(self, question: str) -> Grounding:
        return self.kbs.ground([self.kb_id], question, 5)

    def topics(self) -> list[str]:
        return course_words(self.kbs, [self.kb_id])


def pronoun_for(question: str, names: tuple[str, ...], pronoun: str) -> str | None:
    """The question with a pronoun in place of its topic's name, or None where it names none
    (or only where no pronoun can stand)."""
    for name in names:
        found = re.search(rf"\b{re.escape(name)}\b('s)?", question, re.IGNORECASE)
        if found is None:
            continue
        before, after = question[: found.start()], question[found.end() :]
        if found.group(1):
            said = POSSESSIVE[pronoun]
        elif _OBJECT_BEFORE.search(before):
            said = OBJECT[pronoun]
        elif _SUBJECT_BEFORE.search(before) and (before or _VERB_AFTER.match(after)):
            said = pronoun
        else:
            return None
        said = said.capitalize() if not before else said
        return before + said + after
    return None


def _left_out(n: int) -> bool:
    return n % LEFT_OUT == LEFT_OUT - 1


def english(
    path: Path, per_topic: int, seed: int, articles: dict[str, tuple[str, tuple[str, ...]]] = ARTICLES
) -> tuple[list[dict[str, Any]], Course]:
    squad = {a["title"]: a for a in json.loads(path.read_text())["data"]}
    kbs = service()
    kb = kbs.create("SQuAD 2.0 train")
    rng = random.Random(seed)
    items = []
    named_by_article: dict[str, list[dict[str, Any]]] = {}
    chosen = {title: how for title, how in articles.items() if title in squad}
    for title, (pronoun, names) in chosen.items():
        article = squad[title]
        kept = [p["context"] for n, p in enumerate(article["paragraphs"]) if not _left_out(n)]
        ingest(kbs, kb.id, f"{title}.md", (f"# {title.replace('_', ' ')}\n\n" + "\n\n".join(kept)).encode())
        pool: dict[str, list[dict[str, Any]]] = {"covered": [], "uncovered": []}
        for n, paragraph in enumerate(article["paragraphs"]):
            for qa in paragraph["qas"]:
                follow = pronoun_for(qa["question"], names, pronoun)
                if follow is None:
                    continue
                kind = "uncovered" if _left_out(n) or qa["is_impossible"] else "covered"
                answers = [a["text"] for a in qa["answers"]]
                pool[kind].append({"named": qa["question"], "follow": follow, "answers": answers, "topic": title})
        named_by_article[title] = pool["covered"]
        for kind, some in pool.items():
            for entry in rng.sample(some, min(per_topic, len(some))):
                first = rng.choice([q for q in pool["covered"] if q is not entry])["named"]
                items.append({**entry, "kind": kind, "first": first, "language": "en"})
    for title in chosen:  # a question naming its own topic, after an answer on another one
        for entry in rng.sample(named_by_article[title], min(per_topic, len(named_by_article[title]))):
            other = rng.choice([t for t in chosen if t != title])
            first = rng.choice(named_by_article[other])["named"]
            items.append({**entry, "follow": entry["named"], "kind": "switched", "first": first, "language": "en"})
    return items, Course(kbs, kb.id)


def chinese(path: Path, per_topic: int, seed: int) -> tuple[list[dict[str, Any]], Course]:
    articles = json.loads(path.read_text(encoding="utf-8"))["data"]
    paragraphs = [(a["title"], p) for a in articles for p in a["paragraphs"]]
    kbs = service()
    kb = kbs.create("CMRC 2018 trial")
    for start in range(0, min(CMRC_INDEXED, len(paragraphs)), CMRC_PER_DOCUMENT):
        group = paragraphs[start : start + CMRC_PER_DOCUMENT]
        notes = "\n\n".join(f"{title}\n\n{p['context']}" for title, p in group)
        ingest(kbs, kb.id, f"notes-{start // CMRC_PER_DOCUMENT:02d}.txt", notes.encode())
    rng = random.Random(seed)
    plain = lambda title: re.sub(r"[（(].*?[)）]", "", title).strip()  # noqa: E731
    named: dict[str, list[dict[str, Any]]] = {}
    for n, (title, paragraph) in enumerate(paragraphs):
        name = plain(title)
        if len(name) < 2:
            continue
        context = paragraph["context"]
        pronoun = max("他她它", key=context.count)
        for qa in paragraph["qas"]:
            if name in qa["question"]:
                kind = "covered" if n < CMRC_INDEXED else "uncovered"
                entry = {"named": qa["question"], "follow": qa["question"].replace(name, pronoun)}
                entry |= {"answers": [a["text"] for a in qa["answers"]], "topic": title, "kind": kind}
                named.setdefault(title, []).append(entry)
    indexed = [t for t, p in paragraphs[:CMRC_INDEXED] if len(named.get(t, [])) >= 2]
    items = []
    for title, entries in named.items():
        for entry in entries:
            if entry["kind"] == "covered" and title in indexed:
                first = rng.choice([q for q in entries if q is not entry])["named"]
                items.append({**entry, "first": first, "language": "zh"})
                other = rng.choice([t for t in indexed if t != title])
                switched = {**entry, "follow": entry["named"], "kind": "switched"}
                items.append({**switched, "first": rng.choice(named[other])["named"], "language": "zh"})
            elif entry["kind"] == "uncovered" and indexed:
                first = rng.choice(named[rng.choice(indexed)])["named"]
                items.append({**entry, "first": first, "language": "zh"})
    by_kind = [[i for i in items if i["kind"] == kind] for kind in ("covered", "uncovered", "switched")]
    chosen = [i for some in by_kind for i in rng.sample(some, min(per_topic * len(ARTICLES), len(some)))]
    return chosen, Course(kbs, kb.id)


def holds(answer: str, gold: list[str], chinese: bool) -> bool:
    if chinese:
        return any(g and g in answer for g in gold)
    return any(normalise(g) in normalise(answer) for g in gold if normalise(g))


def ask(items: list[dict[str, Any]], course: Course) -> list[dict[str, Any]]:
    ground = course.ground
    results = []
    for item in items:
        first = ground(item["first"])
        said = [("assistant", first.quote, {"sources": first.citations()}), ("user", item["first"], {})]
        topic = last_topic(said, course.topics)
        chinese = item["language"] == "zh"
        row = {**item, "first_answered": first.answered, "read_topic": topic}
        for how in HOW:
            if how == "in_context":
                grounding = ground_in_context(ground, item["follow"], topic)
            else:
                grounding = ground(item["named"] if how == "named" else item["follow"])
            right = grounding.answered and holds(grounding.quote, item["answers"], chinese)
            row[how] = {"answered": grounding.answered, "correct": right, "quote": grounding.quote[:200]}
        results.append(row)
    return results


def summarise(language: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for kind in ("covered", "uncovered", "switched"):
        some = [r for r in results if r["kind"] == kind]
        if not some:
            continue
        row: dict[str, Any] = {"language": language, "kind": kind, "questions": len(some)}
        row["first_answered"] = round(sum(r["first_answered"] for r in some) / len(some), 3)
        row["topic_read"] = round(sum(bool(r["read_topic"]) for r in some) / len(some), 3)
        for how in HOW:
            answered = [r for r in some if r[how]["answered"]]
            right = [r for r in answered if r[how]["correct"]]
            row[f"{how}_correct"] = round(len(right) / len(some), 3)
            row[f"{how}_wrong"] = round((len(answered) - len(right)) / len(some), 3)
            row[f"{how}_declined"] = round(1 - len(answered) / len(some), 3)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--squad", type=Path, help="SQuAD 2.0 train-v2.0.json (train split only)")
    parser.add_argument("--cmrc", type=Path, help="CMRC 2018 trial in SQuAD form")
    parser.add_argument("--per-topic", type=int, default=12, help="English items per article and kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--held-out", action="store_true", help="English: the articles not looked at (no Chinese)")
    parser.add_argument("--name", default="followups", help="bench/results/<name>.json")
    args = parser.parse_args()
    rows, answers = [], {}
    if args.held_out:
        args.cmrc = None
    english_articles = HELD_OUT_ARTICLES if args.held_out else ARTICLES
    for language, path, build in (
        ("en", args.squad, functools.partial(english, articles=english_articles)),
        ("zh", args.cmrc, chinese),
    ):
        if path:
            items, course = build(path, args.per_topic, args.seed)
            answers[language] = ask(items, course)
            rows += summarise(language, answers[language])
    if not rows:
        parser.error("pass --squad and/or --cmrc")
    report(args.name, rows, {"seed": args.seed, "answers": answers})


if __name__ == "__main__":
    main()
