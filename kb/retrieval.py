"""Hybrid retrieval: dense vectors from Chroma and BM25 over CJK-aware keywords.

Dense alone fails on Chinese with the English embedding model, and keywords alone miss
paraphrases; each side proposes candidates, their scores, each spread over its own top
candidates, are added to order them (the keyword side's alone where the dense side cannot be
trusted, below). The dense side matches each passage whole and by its best sentence: a
question is usually answered by one sentence, which a passage's single vector dilutes. A
passage counts as relevant when a side is confident about it (cosine similarity of the
passage or of one of its sentences, or the share of the question's keywords the passage
contains). When none clears its threshold nothing is returned, and the tutor says the
material does not cover the question. An English-only embedding model scores any two Chinese
texts as similar, so for a mostly-Chinese question with such a model only the keyword side
may vouch for a passage.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

_LATIN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
STOPWORDS = frozenset(
    "a an and are as at be by can could did do does for from had has have how i in is it its of on or "
    "that the this to was what when where which who why will with you your".split()
    + "的 了 是 在 和 吗 呢 什么 怎么 为什么".split()
)


# Chinese question words (哪, 谁, 什么, 多少, …), alone or in a character pair: a question has
# them, the material seldom does, and an answer never. Counted, they left a short question on
# the material's topic uncovered ("什么是原子？": 3 of its 8 keywords in the passage on atoms).
CJK_ASKING = re.compile(r"[哪谁啥么什怎呢吗几]|多少|如何|为何|何时")


def keywords(text: str) -> list[str]:
    """Latin words, and for Chinese every character and every pair of neighbours: no
    dictionary needed, and a two-character word matches itself. Question words are left out."""
    text = text.lower()
    terms = [w for w in _LATIN.findall(text) if w not in STOPWORDS]
    for run in _CJK.findall(text):
        terms += [c for c in run if c not in STOPWORDS]
        terms += [run[i : i + 2] for i in range(len(run) - 1)]
    return [t for t in terms if not CJK_ASKING.search(t)]


class BM25:
    """Okapi BM25 over an inverted index: a query touches only the passages sharing a term."""

    def __init__(self, documents: list[list[str]], k1: float = 1.4, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.lengths = lengths = [len(d) for d in documents]
        average = sum(lengths) / len(documents) if documents else 1.0
        self.postings: dict[str, list[tuple[int, float]]] = {}
        for index, document in enumerate(documents):
            norm = k1 * (1 - b + b * lengths[index] / (average or 1))
            for term, f in Counter(document).items():
                # The term's weight in this passage, all but the idf: computed once, here.
                self.postings.setdefault(term, []).append((index, f * (k1 + 1) / (f + norm)))
        n = len(documents)
        self.idf = {t: math.log(1 + (n - len(p) + 0.5) / (len(p) + 0.5)) for t, p in self.postings.items()}

    def top(self, query: list[str], k: int) -> list[tuple[int, float]]:
        scores: dict[int, float] = {}
        for term in set(query):
            idf = self.idf.get(term, 0.0)
            for index, weight in self.postings.get(term, ()):
                scores[index] = scores.get(index, 0.0) + idf * weight
        return sorted(scores.items(), key=lambda pair: -pair[1])[:k]


@dataclass
class KeywordIndex:
    """A knowledge base's passages as keywords, for BM25 and coverage."""

    ids: list[str]
    terms: list[list[str]]
    bm25: BM25 = field(init=False)
    position: dict[str, int] = field(init=False)  # a chunk id's place in `ids` and `terms`

    def __post_init__(self) -> None:
        self.bm25 = BM25(self.terms)
        self.position = {chunk_id: n for n, chunk_id in enumerate(self.ids)}


def mostly_cjk(text: str) -> bool:
    letters = [ch for ch in text if ch.isalnum()]
    return bool(letters) and sum(1 for ch in letters if _CJK.match(ch)) / len(letters) >= 0.3


def coverage(query: list[str], passage: list[str]) -> float:
    """Share of the question's distinct keywords found in the passage."""
    wanted = set(query)
    return len(wanted & set(passage)) / len(wanted) if wanted else 0.0


def spread(scores: dict[str, float], least: float = 0.0) -> dict[str, float]:
    """Each score placed between the lowest of `scores` (0) and the highest (1): a side's top
    candidates on one scale, whatever its own (cosine, BM25). Scores closer together than
    `least` stay as close: a side whose candidates are all about as good names no winner."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    if high == low:  # one candidate, or all alike: each is the side's best
        return dict.fromkeys(scores, 1.0)
    span = max(high - low, least)
    return {key: (value - low) / span for key, value in scores.items()}


# Cosines within this of each other are a near tie, not a ranking: on many passages alike but
# for a number ("cell number 450 …"), the dense side's hair-breadth order outweighed the
# keyword side's exact match. SQuAD 2.0 train, seven articles, recall@5: 0.956 without, 0.957
# with 0.1 (0.15: 0.956, 0.2: 0.954).
DENSE_SPAN = 0.1


# The dense side's share of the fused score (its passage and sentence halves equal), the
# keyword side's the rest. Chosen on SQuAD 2.0 train, seven articles: recall@5 0.950 with
# passages and keywords equal, 0.954 with sentences added equally, 0.956 at 0.6 (0.5: 0.954,
# 0.7: 0.951).
DENSE_SHARE = 0.6


@dataclass(frozen=True)
class Candidate:
    chunk_id: str
    dense: float | None = None  # cosine similarity of the passage
    sentence: float | None = None  # cosine similarity of its closest sentence
    dense_spread: float = 0.0  # `spread` over the dense side's top candidates; 0 outside them
    sentence_spread: float = 0.0  # the same over the passages' closest sentences
    keyword_spread: float = 0.0  # the same for BM25
    coverage: float = 0.0

    def relevant(self, min_similarity: float | None, min_coverage: float, min_sentence: float) -> bool:
        """`min_similarity` None: the dense scores cannot be trusted for this question."""
        dense_ok = min_similarity is not None and (
            (self.dense or 0.0) >= min_similarity or (self.sentence or 0.0) >= min_sentence
        )
        return dense_ok or self.coverage >= min_coverage

    def score(self, trust_dense: bool) -> float:
        """What is shown as the passage's relevance: the surest of the measures that vouch."""
        return max(self.dense or 0.0, self.sentence or 0.0, self.coverage) if trust_dense else self.coverage

    def fused(self, trust_dense: bool) -> float:
        """The sides to be trusted, weighed by `DENSE_SHARE`: an English model's scores of
        Chinese passages are noise, and fusing them pushed the passage holding the answer out
        of the top five (CMRC trial recall@5: 0.635 fused, 0.829 on keywords alone). Scores,
        not ranks: a side's clear winner counts for more than a near tie (SQuAD 2.0 train,
        seven articles: recall@5 0.942 with reciprocal ranks, 0.950 with scores)."""
        if not trust_dense:
            return self.keyword_spread
        dense = (self.dense_spread + self.sentence_spread) / 2
        return DENSE_SHARE * dense + (1 - DENSE_SHARE) * self.keyword_spread
