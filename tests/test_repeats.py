"""A model's loops are neither shown nor spoken: `Repeats` on its own, in the `Generate` stage
with a looping engine, and SmolLM2's own Chinese loops through the real server."""

from __future__ import annotations

import json
import random
import re
from collections.abc import AsyncIterator

import pytest
import websockets

from app.conversation.frames import AnswerText, LLMRequest, TextDelta
from app.conversation.pipeline import Pipeline
from app.conversation.repeats import Repeats
from app.conversation.stages import Generate
from app.core.engines import ChatMessage, GenerationOptions
from tests.kit.live import collect_answer, new_session, new_tutor, ws_url
from tests.kit.scripted import ScriptedLLM


def _kept(text: str, size: int) -> tuple[str, bool]:
    repeats, out = Repeats(), []
    for i in range(0, len(text), size):
        out.append(repeats.push(text[i : i + size]))
    return "".join(out) + repeats.flush(), repeats.looped


# What SmolLM2-135M wrote (temperature 0) to a Chinese tutor, and what is left of it.
LOOPS = [
    ("你好！！\n\n！！！\n\n你好！！\n\n你好！！\n\n你女＃＃＃＃＃＃＃", "你好！！\n\n"),
    ("谢谢！！！！！！！！！！！！！！！！！！", "谢谢！！！"),
    ("P.S.\n\nP.S.\n\nP.S.\n\n", "P.S.\n\n"),
    (
        "你能再解释吗？\n\n说明: \n你能再解释吗？\n\n说明: \n你能再解释吗？",
        "你能再解释吗？\n\n说明: \n你能再解释吗？\n\n",
    ),
    ("你好！！\n\n美女美女美女美女美女美女美女美女美女美女", "你好！！\n\n美女"),
    ('长城有多长？\n\nThe answer is "The answer is "The answer is "The answer is "', '长城有多长？\n\nThe answer is "'),
    ("1. 1. 1. 1. 1. 1. 1. 1. 1. 1.", "1. "),
]
# Text that only looks like a loop: abbreviations, decimals, blanks, Markdown, lists, emphasis.
UNTOUCHED = [
    "Photosynthesis is how plants make food. It happens in leaves, e.g. in chloroplasts. It is 3.5 m. "
    "Mr. Smith said so. Mr. Jones too.",
    "Fill in: ______ is the capital. Really?! Yes.",
    "1. Light\n2. Water\n3. Carbon dioxide\n",
    "| a | b |\n|---|---|---|---|\n| 1 | 2 |",
    "It is very very important. Bye bye!",
    "谢谢谢谢你！哈哈哈，好的。光合作用在叶绿体中进行，叶绿体含有叶绿素。",
    "What is it? What is it made of?",
    # What a first version cut (found by reading it): numbers, abbreviations, code, ellipses.
    "The speed of light is about 300000000 m/s. 1,000,000,000 people. 1/3 = 0.333333... 0.142857142857142857",
    "光速约为300000000米每秒。我想想......好的。Hmmmmmm, Noooooo. #FFFFFF",
    "The U.S. is a big country. The U.S. has 50 states. It opens at 9 a.m. on Monday. It opens at 9 a.m. daily.",
    "class A:\n    pass\n\nclass B:\n    pass\n**Example:**\nx\n**Example:**\ny\n",
    "Why? ...because it rains. Wait. ...and then it rained. very very very important, no, no, no!",
    # What the second version cut (a second reading): code, quizzes, worked sums, tables.
    'case 1:\n  printf("one");\n  break;\ncase 2:\n  printf("two");\n  break;\nwhile (a != b) {}\n- x.com/watch?v=a\n',
    "1. The sun is a star. True.\n2. The moon is a planet. False.\n3. Water is wet. True.\n",
    "Check: 3 + 4 = 7. Correct! Then 5 + 2 = 7. Correct! 2 + 2 = 4. 2 × 2 = 4. "
    "Add salt. Stir well. Add water. Stir well.",
    "| Free | No | No | No | No |\n| 可燃 | 是 | 是 | 是 | 是 |\n2^5 = 2 x 2 x 2 x 2 x 2\n"
    "visited = [False, False, False, False, False]",
    "0xFFFFFFFF, AAAAAAAAAAAA, TTAGGGTTAGGGTTAGGGTTAGGG, 哈哈哈哈哈哈哈哈，好的。"
    "════════════════════\n^^^^^^^^^^^^^^^^",
    "Chapter 1 ............... 5\ndef area(self):\n    ...\n\ndef perimeter(self):\n    ...\n",
    "Look at this!\n![diagram](x.png)\nRun this in Colab!\n!pip install numpy\n",
    "```python\nx += 1\nx += 1\nx += 1\n```\nDone.",
]


@pytest.mark.parametrize(("text", "kept"), LOOPS)
@pytest.mark.parametrize("size", [1, 2, 7])
def test_a_loop_is_kept_once_and_ends_the_answer(text: str, kept: str, size: int) -> None:
    assert _kept(text, size) == (kept, True)


@pytest.mark.parametrize("text", UNTOUCHED)
@pytest.mark.parametrize("size", [1, 3, 50])
def test_text_that_only_looks_like_a_loop_streams_unchanged(text: str, size: int) -> None:
    assert _kept(text, size) == (text, False)


def test_every_character_is_passed_on_or_counted_as_left_out() -> None:
    pieces = ["the ", "cat ", "sat", ". ", "! ", "!!", "？", "。", "\n", "你好", "谢谢", "ab", "1", "0", ",", " ", "😀"]
    pieces += ["…", "——", "-", "*", "#", "P.S.", "e.g. ", "3.5", "是", "的", "！！！！！！！"]
    chooser = random.Random(3)
    for _ in range(2000):
        text = "".join(chooser.choice(pieces) for _ in range(chooser.randint(1, 40)))
        repeats = Repeats()
        out = "".join(repeats.push(text[i : i + 4]) for i in range(0, len(text), 4)) + repeats.flush()
        assert len(out) + repeats.left_out == len(text), text
        assert (out, repeats.looped) == _kept(text, 1), text  # however the text is cut into pieces


class _Looping(ScriptedLLM):
    """An engine that says one sentence and then the same one up to its token limit."""

    async def stream(self, messages: list[ChatMessage], options: GenerationOptions) -> AsyncIterator[str]:
        self.pieces = 0
        try:
            yield "Cells are small. "
            while self.pieces < 1000:
                self.pieces += 1
                yield "They are alive. "
        except GeneratorExit:
            self.cancelled += 1
            raise


async def test_generate_stops_the_engine_at_the_loop_and_keeps_the_answer_before_it() -> None:
    engine = _Looping()
    request = LLMRequest([ChatMessage("user", "What are cells?")], GenerationOptions(None, 0.0, 100))
    out = [frame async for frame in Pipeline([Generate(engine)], request)]
    (answer,) = [f for f in out if isinstance(f, AnswerText)]
    assert "".join(f.text for f in out if isinstance(f, TextDelta)) == "Cells are small. They are alive. "
    # A sentence is complete when the next begins: the repeat is seen as the third one starts.
    assert answer.text == "Cells are small. They are alive." and answer.left_out == 2 * len("They are alive. ")
    assert engine.cancelled == 1 and engine.pieces == 3


async def test_smollm2s_chinese_loops_and_small_talk_through_the_server(start_server) -> None:
    """The embedded model as a Chinese tutor: small talk gets the tutor's set phrases (SmolLM2
    answered "你好！" with a loop), and what it loops on is cut, in the transcript too."""
    server = await start_server(llm_engine="local").warmed()
    with server.client() as api:
        tutor = new_tutor(api, "李老师", subject="生物", language="zh", temperature=0.0)
        session = new_session(api, tutor["id"])
        asked = ["你好！", "谢谢老师！", "请列出五种水果。", "你能再解释一下吗？", "李白是谁？"]
        async with websockets.connect(ws_url(session)) as ws:
            for question in asked:
                await ws.send(json.dumps({"type": "text", "content": question}))
                assert (await collect_answer(ws, timeout=90))[-1]["type"] == "text"
        said = api.get(f"/v1/sessions/{session['session_id']}/messages").json()
    answers = [m for m in said if m["role"] == "assistant"]
    assert [a["content"] for a in answers[:2]] == [
        "你好！关于生物，有什么想问的，尽管问我。",
        "不客气！还有什么想问的吗？",
    ]
    assert {a["meta"]["engine"] for a in answers[:2]} == {"set phrase"}
    models = answers[2:]
    assert {a["meta"]["engine"] for a in models} == {"local"}
    assert any(a["meta"].get("left_out") for a in models), [a["content"] for a in models]
    for answer in models:
        sentences = [s for s in re.split(r"[。！？!?\n]+|\.\s", answer["content"]) if len(s.strip()) >= 4]
        assert len(sentences) == len(set(sentences)) and not re.search(r"(.)\1{5}", answer["content"])
