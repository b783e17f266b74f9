"""Prompts fit the model's context, counted in tokens; the persona always stays."""

from __future__ import annotations

import pytest

from app.conversation.prompt import StoredMessage, fit_prompt, system_prompt
from tutors.llm.local import LocalLLM
from tutors.llm.tokens import estimate_tokens
from tutors.store import Tutor


@pytest.fixture(scope="module")
def local() -> LocalLLM:
    engine = LocalLLM(context=512)
    engine.warmup()
    return engine


def _history(n: int, words: int) -> list[StoredMessage]:
    return [StoredMessage("user" if i % 2 == 0 else "assistant", f"turn {i}: " + "word " * words) for i in range(n)]


def test_trims_oldest_history_by_tokens_and_keeps_the_persona(local: LocalLLM) -> None:
    persona = system_prompt(Tutor(id=1, name="Ada", persona="Always answer with an example."))
    history = _history(40, 20)  # ~25 tokens each: far more than 512 tokens in all
    messages = fit_prompt(local, persona, history, "What is 2+2?", reserve=128)
    assert messages[0].role == "system" and "Always answer with an example." in messages[0].content
    assert messages[-1].content == "What is 2+2?"
    kept = messages[1:-1]
    assert 5 <= len(kept) < 40
    assert kept[-1].content == history[-1].content  # the newest history is what stays
    used = sum(local.count_tokens(m.content) + 4 for m in messages)
    assert used <= 512 - 128
    # Fewer, longer messages: the count is in tokens, not messages.
    long = fit_prompt(local, persona, _history(40, 80), "What is 2+2?", reserve=128)
    assert len(long) - 2 < len(kept)


def test_chinese_counts_real_tokens(local: LocalLLM) -> None:
    chinese = [StoredMessage("user", "请解释一下光合作用的过程和意义。" * 3)] * 30
    messages = fit_prompt(local, "你是一位耐心的老师。", chinese, "为什么天空是蓝色的？", reserve=128)
    assert sum(local.count_tokens(m.content) + 4 for m in messages) <= 512 - 128
    assert messages[0].content == "你是一位耐心的老师。"


def test_a_question_too_long_for_the_model_is_clipped_to_fit_never_refused(local: LocalLLM) -> None:
    persona = system_prompt(Tutor(id=1, name="Ada", persona="Always answer with an example."))
    question = "why " * 600 + "is the sky blue?"
    messages = fit_prompt(local, persona, _history(4, 20), question, reserve=128)
    assert sum(local.count_tokens(m.content) + 4 for m in messages) <= 512 - 128
    assert messages[0].content == persona, "the persona is whole"
    assert messages[-1].content.startswith("why why") and messages[-1].content.endswith("…")
    # Long course material and a long Chinese question: both clipped, the persona first.
    material = persona + "\n" + "课程资料：光合作用把光能转化为化学能。" * 100
    chinese = "请详细解释光合作用的每一个步骤和意义。" * 60
    clipped = fit_prompt(local, material, [], chinese, reserve=128)
    assert sum(local.count_tokens(m.content) + 4 for m in clipped) <= 512 - 128
    assert clipped[0].content.startswith(persona) and clipped[-1].content.startswith("请详细解释")


def test_estimate_errs_high_for_english_and_counts_cjk(local: LocalLLM) -> None:
    english = "The mitochondria is the powerhouse of the cell, producing energy through respiration."
    assert estimate_tokens(english) >= local.count_tokens(english)
    assert estimate_tokens("光合作用") >= 4
