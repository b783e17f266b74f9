"""Answers in the tutor's language: the model's pieces in another script are dropped as they
stream, a turn left with nothing says so in the tutor's language (or quotes its evidence), and
a Chinese tutor's prompt asks for Chinese in Chinese."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets

from app.conversation.frames import AnswerText, Grounded, TextDelta, TurnStarted
from app.conversation.language import written_in
from app.conversation.pipeline import Pipeline
from app.conversation.prompt import OFF_LANGUAGE, said, system_prompt
from app.conversation.stages import Check, KeepLanguage
from app.core.media import Voice
from kb.grounding import Evidence, Grounding
from kb.passages import Passage
from tests.kit.live import new_session, new_tutor, ws_url
from tutors.store import Tutor


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("牛顿第一定律说，物体保持静止或匀速直线运动。", "zh", True),
        ("Python 是一种很流行的编程语言。", "zh-CN", True),  # an English term keeps it Chinese
        ("这句话的意思是猫在垫子上。例句：The cat is on the mat.", "zh", True),  # an English example
        ("下面是例子：\n```python\nprint(hello_world(items, count))\nreturn value\n```\n这会打印结果。", "zh", True),
        ("Newton's first law says a body keeps its motion.", "zh", False),
        ("Newton's first law says a body keeps its motion.", "yue", False),
        ("Cat.", "zh", None),  # too short to tell
        ("v = s / t", "zh", None),  # one-letter symbols are not words
        ("The word 光合作用 means photosynthesis.", "en", True),
        ("光合作用是植物制造养分的过程。", "en", False),
        ("光合作用是植物制造养分的过程。", "fr", False),
        ("光合作用是植物制造养分的过程。", "ja", None),  # Japanese writes Chinese characters too
        ("anything at all, in any words", "", None),
    ],
)
def test_an_answer_is_judged_by_its_script(text: str, language: str, expected: bool | None) -> None:
    assert written_in(text, language) is expected


async def _kept(language: str, *deltas: str, grounding: Grounding | None = None) -> list[Any]:
    first: list[Any] = [TurnStarted(Voice.resolve(None, language or "en"), None, language)]
    first += [Grounded(grounding)] if grounding else []
    frames = [*first, *(TextDelta(d) for d in deltas), AnswerText("".join(deltas).strip(), sources=[{"n": 1}])]
    async with asyncio.timeout(5):
        out = [f async for f in Pipeline([KeepLanguage(), Check()], *frames)]
    return [f for f in out if isinstance(f, TextDelta | AnswerText)]


async def test_an_answer_in_the_tutors_language_flows_on_exactly_as_written() -> None:
    pieces = ("1. 牛顿", "第一定律说，物体保持静止\n", "2. 例句：The cat ", "is on the mat.")
    *deltas, final = await _kept("zh", *pieces)
    assert final == AnswerText("".join(pieces), sources=[{"n": 1}])
    assert [d.text for d in deltas] == list(pieces)  # at once, newlines, spaces and all


@pytest.mark.parametrize(
    ("language", "answer"),
    [
        ("zh", "Newton's first law says that a body keeps its motion. It is called inertia."),
        ("en", "惯性是物体保持原来运动状态的性质。"),
        ("fr", "惯性是物体保持原来运动状态的性质。"),
        ("zh-TW", "Newton's first law says that a body keeps its motion."),
    ],
)
async def test_an_answer_in_another_language_is_an_apology_in_the_tutors(language: str, answer: str) -> None:
    *deltas, final = await _kept(language, answer[:20], answer[20:])
    apology = said(OFF_LANGUAGE, language)
    assert [d.text for d in deltas] == [apology]
    assert final.text == apology and final.sources == [] and final.off_language == len(answer)
    if language == "zh-TW":
        assert apology == OFF_LANGUAGE["zh-hant"]


async def test_a_grounded_answer_in_another_language_falls_to_its_evidence() -> None:
    text = "惯性是物体保持原来运动状态的性质。"
    passage = Passage(text, 0.8, {"document": "力学.txt", "document_id": "d1"}, "c1")
    grounding = Grounding("什么是惯性？", [passage], [Evidence(text, passage, 1.0, 0.8)], "test")
    *_, final = await _kept("zh", "Inertia is the tendency of a body ", "to keep its motion.", grounding=grounding)
    assert final.text == text and final.grounding["style"] == "quoted" and final.off_language > 0


async def test_an_answer_too_short_to_tell_passes() -> None:
    *deltas, final = await _kept("zh", "Cat", ".")  # leaning away: held to the end, then passed
    assert [d.text for d in deltas] == ["Cat."] and final.text == "Cat." and not final.off_language


async def test_what_leans_away_waits_and_what_fits_flows() -> None:
    *deltas, final = await _kept("zh", "[Ada] ", "光合作用", "就是这样进行的。")
    assert [d.text for d in deltas] == ["[Ada] 光合作用", "就是这样进行的。"]  # "[Ada] " waited for one piece
    *deltas, final = await _kept("en", "Photosynthesis ", "happens in the leaves.")
    assert [d.text for d in deltas] == ["Photosynthesis ", "happens in the leaves."]


async def test_answers_that_never_reached_the_model_are_not_judged() -> None:
    whole = AnswerText("The material says: mitochondria produce ATP.", engine="quoted")
    frames = [TurnStarted(Voice.resolve(None, "zh"), None, "zh"), whole]
    assert [f async for f in Pipeline([KeepLanguage()], *frames) if isinstance(f, AnswerText)] == [whole]


def test_a_chinese_tutors_prompt_asks_for_its_script_in_chinese() -> None:
    simplified = system_prompt(Tutor(1, "李老师", language="zh"))
    traditional = system_prompt(Tutor(2, "陳老師", language="zh-TW"))
    assert "Answer in Simplified Chinese." in simplified and "请只用简体中文回答。" in simplified
    assert "Answer in Traditional Chinese." in traditional and "請只用繁體中文回答。" in traditional
    assert "Answer in English." in system_prompt(Tutor(3, "Ada"))


async def test_a_chinese_tutor_answers_an_english_drift_in_chinese_and_records_it(server: Any, api: Any) -> None:
    """The scripted model repeats the question: asked in English, it answers in English, which
    a Chinese tutor does not pass on; a mixed question's answer is Chinese enough to keep."""
    session = new_session(api, new_tutor(api, "Ada", language="zh")["id"])
    async with websockets.connect(ws_url(session)) as ws:
        answers = []
        for question in ("What is inertia, in one sentence?", "什么是 inertia？"):
            await ws.send(json.dumps({"type": "text", "content": question}))
            while (message := json.loads(await asyncio.wait_for(ws.recv(), 20)))["type"] != "text":
                assert message["type"] != "error", message
            answers.append(message["content"])
    assert answers == [OFF_LANGUAGE["zh"], "[Ada|1] 什么是 inertia？"]
    deadline = asyncio.get_running_loop().time() + 10
    while len(stored := api.get(f"/v1/sessions/{session['session_id']}/messages").json()) < 4:
        assert asyncio.get_running_loop().time() < deadline, stored  # stored just after it is sent
        await asyncio.sleep(0.1)
    first, second = (m for m in stored if m["role"] == "assistant")
    assert first["content"] == OFF_LANGUAGE["zh"] and first["meta"]["off_language"] >= 1
    assert "off_language" not in second["meta"]
