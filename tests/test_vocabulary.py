"""The course's own words, heard: a Chinese question whose words sound like the material's is
heard again for them (app/speech/vocabulary.py)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import websockets

from app.core.engines import ListenFor, Transcript
from app.core.media import PCM
from app.speech.asr import EMBEDDED_MULTI, WhisperASR
from app.speech.vocabulary import context, hear, mend, sounds_near
from tests.kit.live import collect_answer, indexed, new_session, new_tutor, ws_url
from tests.kit.speech import b64_wav, cer, say_zh, with_silence

# Course notes written for these tests: a rare term (放线菌酮) and a plant's name (猴面包树).
ANTIBIOTIC = (
    "放线菌酮是一种由灰色链霉菌产生的抗生素。它能阻碍真核细胞的蛋白质合成，所以在分子生物学中"
    "常被用来测定蛋白质的半衰期。放线菌酮对细菌没有作用，对人体却有很强的毒性，因此不能用作药物。"
)
BAOBAB = "猴面包树（又名波巴布树）生长在非洲的草原上。它的树干能储存大量的水，果实可以食用。"


@pytest.mark.parametrize(
    ("heard", "mended"),
    [
        ("在分子生物学中,放线菌统有什么作用?", "在分子生物学中,放线菌酮有什么作用?"),  # another tone
        ("放线菌同事怎样阻碍蛋白质合成？", "放线菌酮是怎样阻碍蛋白质合成？"),  # two homophones in a row
        ("放线菌酮有什么作用？", "放线菌酮有什么作用？"),  # written as the material writes it
        ("光合作用需要哪些原料？", "光合作用需要哪些原料？"),  # nothing in the material sounds like it
        ("什么是中立？", "什么是中立？"),  # two characters, none the same: too common a likeness
    ],
)
def test_the_materials_homophones_are_written_as_the_material_writes_them(heard: str, mended: str) -> None:
    assert mend(heard, [ANTIBIOTIC, BAOBAB]) == mended


def test_what_sounds_near_the_material_is_worth_hearing_again() -> None:
    assert sounds_near("放线菌统有什么作用", [ANTIBIOTIC])
    assert sounds_near("它的树杆能储存水吗", [BAOBAB])  # 树杆: two characters, one the same
    assert not sounds_near("放线菌酮有什么作用", [ANTIBIOTIC])
    assert not sounds_near("光合作用需要哪些原料", [ANTIBIOTIC, BAOBAB])
    assert not sounds_near("放线菌统有什么作用", [])


def test_the_context_is_the_materials_closest_sentences_without_brackets() -> None:
    found = context("猴面包树生长在哪里", [ANTIBIOTIC, BAOBAB], budget=40)
    assert found.startswith("猴面包树又名波巴布树生长在非洲的草原上。")  # the closest first, brackets out
    assert len(found) <= 40 and "放线菌酮" not in found


class Scripted:
    """A recogniser that writes `first` unless its hint holds `knows`, then `again`."""

    def __init__(self, first: str, again: str = "", language: str = "zh", knows: str = "放线菌酮") -> None:
        self.first, self.again, self.language, self.knows = first, again, language, knows
        self.hints: list[str] = []

    def warmup(self) -> None:
        pass

    def transcribe(self, pcm: PCM, language: str | None, hint: str = "", traditional: bool = False) -> Transcript:
        self.hints.append(hint)
        text = self.again if self.knows in hint else self.first
        return Transcript(text, self.language, pcm.seconds, 5.0)


def _material(passages: list[str], asked: list[str]):
    def search(heard: str) -> list[str]:
        asked.append(heard)
        return passages

    return search


def test_a_question_near_the_materials_words_is_heard_again_with_them() -> None:
    asr, asked = Scripted("放线菌同事怎样阻挨蛋白质合成", again="放线菌同是怎样阻碍蛋白质合成"), []
    heard = hear(asr, PCM.silence(1.0), ListenFor("zh", "生物。", material=_material([ANTIBIOTIC], asked)))
    assert asked == ["放线菌同事怎样阻挨蛋白质合成"]  # the material searched for the words first heard
    assert asr.hints[0] == "生物。" and "阻碍真核细胞的蛋白质合成" in asr.hints[1]
    assert heard.text == "放线菌酮是怎样阻碍蛋白质合成"  # heard again, then its homophone mended
    assert heard.first_heard == "放线菌同事怎样阻挨蛋白质合成" and heard.elapsed_ms > 0


@pytest.mark.parametrize(
    ("asr", "passages"),
    [
        (Scripted("放线菌统有什么作用"), []),  # the material does not cover it: nothing to hear for
        (Scripted("光合作用需要哪些原料"), [ANTIBIOTIC]),  # covered, and nothing sounds near
        (Scripted("What is cycloheximide?", language="en"), [ANTIBIOTIC]),  # English: not searched
    ],
)
def test_otherwise_the_question_stands_as_first_heard(asr: Scripted, passages: list[str]) -> None:
    asked: list[str] = []
    heard = hear(asr, PCM.silence(1.0), ListenFor("zh", material=_material(passages, asked)))
    assert heard.text == asr.first and not heard.first_heard and len(asr.hints) == 1
    assert asked == ([] if asr.language == "en" else [asr.first])


def test_a_failed_search_of_the_material_never_loses_the_question(caplog) -> None:
    def broken(heard: str) -> list[str]:
        raise ConnectionError("the Chroma server is down")

    with caplog.at_level(logging.WARNING):
        heard = hear(Scripted("放线菌统有什么作用"), PCM.silence(1.0), ListenFor("zh", material=broken))
    assert heard.text == "放线菌统有什么作用" and "Chroma server is down" in caplog.text


def test_whisper_base_hears_the_courses_rare_term_with_its_material() -> None:
    """The real recogniser: base writes 放线菌酮 as 放现金统 here (bench_asr: 16 % of characters
    wrong over CMRC questions, 10 % with their material). What it writes without the material
    is left unasserted: int8 decoding may differ from one CPU to another."""
    asr = WhisperASR(EMBEDDED_MULTI)
    asr.warmup()
    question = "放线菌酮有什么作用？"
    heard = hear(asr, say_zh(question), ListenFor("zh", material=lambda words: [ANTIBIOTIC, BAOBAB]))
    assert "放线菌酮" in heard.text and cer(question, heard.text) <= 0.1, heard


async def test_a_chinese_tutor_hears_its_courses_words_and_answers_from_them(start_server: Any) -> None:
    """Through the server: a spoken question to a Chinese tutor with a knowledge base is heard
    with its material, and the grounded answer quotes the passage it is about."""
    server = start_server(enable_asr=True, enable_tts=False)
    question = "猴面包树的果实可以吃吗？"  # base alone: 后面包薯的果实可以吃吗
    with server.client() as api:
        kb_id = api.post("/v1/kbs", json={"name": "植物"}).json()["id"]
        indexed(api, kb_id, "植物笔记.txt", f"抗生素\n\n{ANTIBIOTIC}\n\n猴面包树\n\n{BAOBAB}".encode())
        tutor = new_tutor(api, "李", language="zh", kb_ids=[kb_id])
        session = new_session(api, tutor["id"])
        await server.warmed()
        async with websockets.connect(ws_url(session)) as ws:
            await ws.send(json.dumps({"type": "audio", "content": b64_wav(with_silence(say_zh(question), 0.3, 0.5))}))
            messages = await collect_answer(ws)
        said = api.get(f"/v1/sessions/{session['session_id']}/messages").json()
    heard = messages[0]
    assert heard["type"] == "transcription" and "猴面包树" in heard["content"], messages
    final = messages[-1]
    assert "果实可以食用" in final["content"] and final["sources"][0]["document"] == "植物笔记.txt"
    assert said[0]["content"] == heard["content"] and said[0]["meta"]["spoken"]
