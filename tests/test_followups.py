"""Follow-up questions: "Where does it take place?" after "What is photosynthesis?" is read about
the last answer's topic, in English and Chinese, through the real server and knowledge base;
a question that names its own topic, or needs none, is read as asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import websockets

from app.conversation.prompt import NOT_COVERED
from app.conversation.talk import about, ground_in_context, last_topic, names, refers_back
from kb.grounding import Evidence, Grounding
from kb.passages import Passage
from tests.kit.benchmarks import run_benchmark
from tests.kit.live import collect_answer, indexed, new_session, new_tutor, ws_url

NOTES_EN = b"""# Photosynthesis

Photosynthesis is the process by which green plants use light energy to make sugar from carbon \
dioxide and water. It takes place in the chloroplasts, which contain the green pigment chlorophyll. \
Oxygen is released as a by-product.

# The Eiffel Tower

The Eiffel Tower is a wrought-iron lattice tower in Paris. It was designed by the company of the \
engineer Gustave Eiffel and built between 1887 and 1889. The tower is 330 metres tall.
"""
NOTES_ZH = """# 光合作用

光合作用是绿色植物利用光能，把二氧化碳和水合成有机物，并释放氧气的过程。光合作用在叶绿体中进行，叶绿体含有叶绿素。

# 长城

长城是中国古代的军事防御工程。现存的长城大部分是明朝修建的，全长约两万一千多公里。1987年，长城被列入世界文化遗产。
""".encode()


@pytest.mark.parametrize(
    ("question", "topic", "read"),
    [
        ("Where was she born?", "Marie Curie", "Where was Marie Curie born?"),
        ("What is its height?", "The Eiffel Tower", "What is The Eiffel Tower's height?"),
        ("Who designed it and when?", "The Eiffel Tower", "Who designed The Eiffel Tower and when?"),
        ("What is released?", "Photosynthesis", "Photosynthesis: What is released?"),
        ("它在哪里进行？", "光合作用", "光合作用 在哪里进行？"),
        ("他们的代表作有哪些？", "李杜", "李杜 的代表作有哪些？"),
        ("全长多少？", "长城", "长城：全长多少？"),
        ("其他植物呢？", "光合作用", "光合作用：其他植物呢？"),  # 其他 is "other", not "it"
    ],
)
def test_a_follow_up_is_read_about_the_topic(question: str, topic: str, read: str) -> None:
    assert about(question, topic) == read


def test_only_pronouns_point_back() -> None:
    assert refers_back("When did he die?") and refers_back("它有多高？") and refers_back("What are their names?")
    assert refers_back("He was born where?") and refers_back("Who is Kathy? Where did she live?")
    assert not refers_back("What is the item's weight?") and not refers_back("其他国家呢？")
    assert not refers_back("Whether the theory holds?")  # "the", "heat", "item" hold no pronoun
    assert not refers_back("What does an IT technician do?") and not refers_back("What is the boiling point of He?")
    assert not any(map(refers_back, ["吉他有几根弦？", "维他命C有什么用？", "他人的看法重要吗？"]))


def test_a_heading_is_put_in_as_it_is_written() -> None:
    """A heading is text, not a template: "\\d" and "\\1" stay as they are."""
    assert about("What does it match?", r"Regex: \d \1") == r"What does Regex: \d \1 match?"
    assert about("它匹配什么？", r"正则\d") == r"正则\d 匹配什么？"


@pytest.mark.parametrize(
    ("question", "topic", "named"),
    [
        ("How tall is the Eiffel Tower?", "The Eiffel Tower", True),
        ("What started the movement?", "Art", False),
        ("MonoDevelop是什么？", "MonoDevelop", True),
        ("长城全长多少？", "长城", True),
    ],
)
def test_a_question_names_a_topic_as_whole_words(question: str, topic: str, named: bool) -> None:
    assert names(question, topic) is named


def _grounding(question: str, section: str | None) -> Grounding:
    passage = Passage("x", 0.9, {"document": "notes.md", "section": section or "Notes"}, "c1")
    evidence = [Evidence("an answer", passage, 1.0, 0.9)] if section else []
    return Grounding(question, [passage], evidence, "because")


class Material:
    """A scripted `ground`: the questions it answers (with the section its evidence is under),
    and every question it was asked."""

    def __init__(self, *answers: str, **under: str) -> None:
        self.answers, self.asked = {a: under.get("section", "Topic") for a in answers}, []

    def __call__(self, question: str) -> Grounding:
        self.asked.append(question)
        return _grounding(question, self.answers.get(question))


def test_a_pronoun_is_read_as_the_topic_first() -> None:
    material = Material("Where was Marie Curie born?", "Where was she born?")
    grounding = ground_in_context(material, "Where was she born?", "Marie Curie")
    assert material.asked == ["Where was Marie Curie born?"] and grounding.answered
    assert grounding.reason.startswith("read as “Where was Marie Curie born?”, the chat being on “Marie Curie”")


def test_a_pronoun_that_is_no_follow_up_is_then_read_as_asked() -> None:
    material = Material("How long does it take light to reach Earth?", section="Light")
    grounding = ground_in_context(material, "How long does it take light to reach Earth?", "Photosynthesis")
    assert material.asked == ["How long does Photosynthesis take light to reach Earth?", grounding.question]
    assert grounding.answered and grounding.reason == "because"


def test_a_pronoun_read_as_asked_must_name_what_its_evidence_is_about() -> None:
    """ "他" after an answer on 光合作用, where the material says nothing of its roots: some other
    plant's roots are no answer."""
    material = Material("他的根有什么特点？", section="狭叶艾纳香 (植物)")
    grounding = ground_in_context(material, "他的根有什么特点？", "光合作用")
    assert material.asked == ["光合作用 的根有什么特点？", "他的根有什么特点？"] and not grounding.answered
    assert grounding.reason.startswith("read as “光合作用 的根有什么特点？”, the chat being on “光合作用”")
    named = Material("狭叶艾纳香的根有什么特点？他呢？", section="狭叶艾纳香 (植物)")
    assert ground_in_context(named, "狭叶艾纳香的根有什么特点？他呢？", "光合作用").answered


def test_a_question_without_a_pronoun_gets_the_topic_only_when_declined_as_asked() -> None:
    material = Material("What is chlorophyll?", "Photosynthesis: What is released?")
    assert ground_in_context(material, "What is chlorophyll?", "Photosynthesis").reason == "because"
    assert material.asked == ["What is chlorophyll?"]
    assert ground_in_context(material, "What is released?", "Photosynthesis").answered
    assert material.asked[1:] == ["What is released?", "Photosynthesis: What is released?"]


@pytest.mark.parametrize("topic", ["", "Marie Curie"])
def test_no_topic_or_a_named_one_reads_the_question_once(topic: str) -> None:
    material = Material()
    grounding = ground_in_context(material, "Where was Marie Curie born?", topic)
    assert material.asked == ["Where was Marie Curie born?"] and not grounding.answered


async def _chat(session: dict[str, Any], chat: int, *questions: str) -> list[dict[str, Any]]:
    answers = []
    async with websockets.connect(ws_url(session)) as ws:
        for question in questions:
            await ws.send(json.dumps({"type": "text", "content": question, "session_id": chat}))
            answers.append((await collect_answer(ws))[-1])
    return answers


async def test_follow_ups_through_the_server_in_english_and_chinese(start_server: Any) -> None:
    """The topic is the chat's own: the same follow-up in a new chat has none, and is declined."""
    server = start_server(kb_answer_style="quote")
    with server.client() as api:
        english, chinese = (api.post("/v1/kbs", json={"name": n}).json()["id"] for n in ("Science", "科学"))
        indexed(api, english, "science.md", NOTES_EN)
        indexed(api, chinese, "科学.md", NOTES_ZH)
        session = new_session(api, new_tutor(api, "Ada", kb_ids=[english])["id"])
        zh_session = new_session(api, new_tutor(api, "李老师", language="zh", kb_ids=[chinese])["id"])

        first, place = await _chat(session, 1, "What is photosynthesis?", "Where does it take place?")
        assert "chloroplasts" in place["content"], place
        assert [s["section"] for s in place["sources"]] == ["Photosynthesis"]
        _, designer = await _chat(session, 1, "How tall is the Eiffel Tower?", "Who designed it?")
        assert "Gustave Eiffel" in designer["content"] and designer["sources"][0]["section"] == "The Eiffel Tower"
        (alone,) = await _chat(session, 2, "Where does it take place?")
        assert alone["content"] == NOT_COVERED["en"] and first["sources"]
        # Declined, the question still says what the chat is about: a heading it names.
        declined, tall = await _chat(session, 3, "Who paints the Eiffel Tower's elevators?", "How tall is it?")
        assert declined["content"] == NOT_COVERED["en"] and "330 metres" in tall["content"], tall

        transcript = api.get(f"/v1/sessions/{session['session_id']}/messages").json()
        reasons = [m["meta"]["grounding"]["reason"] for m in transcript if m["role"] == "assistant"]
        assert reasons[1].startswith("read as “Where does Photosynthesis take place?”"), reasons[1]

        asked = ("什么是光合作用？", "它在哪里进行？", "长城是什么？", "它全长多少？")
        _, where, _, length = await _chat(zh_session, 1, *asked)
        assert "叶绿体" in where["content"] and "两万一千" in length["content"], (where, length)
        (alone,) = await _chat(zh_session, 2, "它在哪里进行？")
        assert alone["content"] == NOT_COVERED["zh"]


def _qa(question: str, context: str, answer: str | None) -> dict[str, Any]:
    answers = [{"text": answer, "answer_start": context.index(answer)}] if answer else []
    return {"question": question, "id": question, "answers": answers, "is_impossible": answer is None}


def _article(title: str, paragraphs: list[tuple[str, list[tuple[str, str | None]]]]) -> dict[str, Any]:
    return {
        "title": title,
        "paragraphs": [{"context": c, "qas": [_qa(q, c, a) for q, a in qas]} for c, qas in paragraphs],
    }


def test_the_follow_up_benchmark_runs(tmp_path: Path) -> None:
    """bench_followups end to end on SQuAD- and CMRC-shaped files: the pronoun questions are
    answered only in context, the uncovered ones declined, the switched ones as asked alone."""
    beyonce = "Beyoncé was born in Houston, Texas, in 1981. Beyoncé rose to fame as the lead singer of Destiny's Child."
    ipod = "The iPod is a portable media player designed by Apple. The iPod was first released on October 23, 2001."
    filler = [("Houston is a large city in Texas.", []), ("Music is an art form.", [])]
    squad = {
        "data": [
            _article(
                "Beyoncé",
                [
                    (beyonce, [("Where was Beyoncé born?", "Houston"), ("Which group did Beyoncé lead?", "Destiny")]),
                    *filler,
                    ("Beyoncé married Jay-Z in 2008.", [("Whom did Beyoncé marry in 2008?", "Jay-Z")]),
                ],
            ),
            _article(
                "IPod",
                [
                    (ipod, [("Who designed the iPod?", "Apple"), ("When was the iPod first released?", "2001")]),
                    *filler,
                    ("The iPod was discontinued in 2022.", [("When was the iPod discontinued?", "2022")]),
                ],
            ),
        ]
    }
    cmrc = {
        "data": [
            _article(
                "长城",
                [
                    (
                        "长城是中国古代的军事防御工程。长城全长约两万一千公里。",
                        [("长城是什么？", "军事防御工程"), ("长城全长多少？", "两万一千公里")],
                    )
                ],
            ),
            _article(
                "李白",
                [
                    (
                        "李白是唐代诗人，出生于公元701年。他的代表作有《静夜思》。",
                        [("李白是哪个朝代的诗人？", "唐代"), ("李白出生于哪一年？", "701年")],
                    )
                ],
            ),
        ]
    }
    (tmp_path / "squad.json").write_text(json.dumps(squad))
    (tmp_path / "cmrc.json").write_text(json.dumps(cmrc, ensure_ascii=False), encoding="utf-8")
    args = ["--squad", str(tmp_path / "squad.json"), "--cmrc", str(tmp_path / "cmrc.json"), "--per-topic", "4"]
    result = run_benchmark("bench_followups", args, "followups-test")
    rows = {(row["language"], row["kind"]): row for row in result["rows"]}
    for language in ("en", "zh"):
        covered, switched = rows[language, "covered"], rows[language, "switched"]
        assert covered["in_context_correct"] > covered["alone_correct"], covered
        assert switched["in_context_correct"] == switched["alone_correct"], switched
    assert rows["en", "uncovered"]["in_context_declined"] == 1.0, rows["en", "uncovered"]


def test_the_topic_is_the_latest_cited_answers_or_what_a_declined_question_named() -> None:
    cited = {"sources": [{"document": "notes.md", "section": "Photosynthesis (biology)"}]}
    course = ["notes", "Photosynthesis", "Marie Curie", "Curie"]
    asked: list[str] = []

    def material() -> list[str]:
        asked.append("material")
        return course

    assert last_topic([("assistant", "It takes place…", cited), ("user", "What is it?", {})], material) == (
        "Photosynthesis"
    )
    assert asked == []  # the cited answer decides; the material's topics are not read
    declined = [
        ("assistant", "Sorry…", {"grounding": {"answered": False}}),
        ("user", "Who was Marie Curie's husband?", {}),
    ]
    assert last_topic([*declined, ("assistant", "…", cited)], material) == "Marie Curie"  # the longest named
    small_talk = [("assistant", "You're welcome!", {}), ("user", "thanks", None)]
    assert last_topic([*small_talk, ("assistant", "…", cited)], material) == "Photosynthesis"
    assert last_topic(small_talk, material) == "" and asked == ["material"] * 3
    assert last_topic([("user", "What started the movement?", {})], lambda: ["Art"]) == ""
    chopin = [("user", "What did Chopin compose?", {})]
    assert last_topic(chopin, lambda: ["George Sand", "Frédéric Chopin (composer)"]) == "Frédéric Chopin"
