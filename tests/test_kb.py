"""Knowledge bases over real HTTP: uploads of every supported kind, background ingestion with
progress, hybrid search in English and Chinese, bad files, and grounded, cited answers."""

from __future__ import annotations

import io
import itertools
import json
import time
from typing import Any

import httpx
import pytest
import websockets

from kb.retrieval import Candidate, keywords, spread
from tests.kit.live import collect_answer, indexed, new_session, new_tutor, wait_indexed, ws_url

BIOLOGY_MD = b"""# Cells
The mitochondrion is the powerhouse of the cell. It produces ATP through cellular respiration.

# Plants
Photosynthesis converts light energy into chemical energy inside chloroplasts.
"""
CHINESE_TXT = "光合作用是植物利用光能把二氧化碳和水转化为葡萄糖和氧气的过程。叶绿体是进行光合作用的场所。".encode()
# One passage mostly about other things, with one sentence on Marie Curie.
NOTICES = (
    "The school library opens at eight and closes at five on weekdays. Lunch is served in the "
    "main hall from noon. Marie Curie worked as a physicist and chemist in Paris. The football "
    "team trains on Tuesdays and Thursdays after class. Parents can collect reports from the "
    "office at the end of term. The car park is closed during the summer holidays. Visitors "
    "sign in at reception and wear a badge. The music room may be booked for rehearsals "
    "through the office. Lost property is kept in the box by the gym for a month."
)
HISTORY_HTML = b"""<!doctype html><html><head><style>p{color:red}</style><script>var x = 'secret';</script></head>
<body><h1>Rome</h1><p>The Roman Republic was founded in 509 BC after the last king was expelled.</p>
<h2>Empire</h2><p>Augustus became the first Roman emperor in 27 BC.</p></body></html>"""


def _pdf(pages: list[str], password: str | None = None) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    if password:
        pdf.set_encryption(owner_password="owner", user_password=password)
    return bytes(pdf.output())


def _docx(heading: str, body: str) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading(heading, level=1)
    document.add_paragraph(body)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _upload(api: httpx.Client, kb_id: str, name: str, data: bytes) -> httpx.Response:
    return api.post(f"/v1/kbs/{kb_id}/documents", files={"file": (name, data)})


def _search(api: httpx.Client, kb_id: str, query: str, k: int = 3) -> list[dict[str, Any]]:
    response = api.post(f"/v1/kbs/{kb_id}/search", json={"query": query, "k": k})
    assert response.status_code == 200, response.text
    return response.json()["results"]


@pytest.fixture
def kb(api: httpx.Client) -> str:
    created = api.post("/v1/kbs", json={"name": "Course", "description": "Year 9"})
    assert created.status_code == 201
    return created.json()["id"]


def test_every_kind_is_ingested_and_found_with_its_source(api: httpx.Client, kb: str) -> None:
    pdf = _pdf(["Chapter one is about volcanoes and magma.", "Tectonic plates move a few centimetres a year."])
    documents = {
        "biology.md": BIOLOGY_MD,
        "光合作用.txt": CHINESE_TXT,
        "rome.html": HISTORY_HTML,
        "geology.pdf": pdf,
        "chemistry.docx": _docx("Acids", "An acid has a pH below seven and turns litmus paper red."),
    }
    for name, data in documents.items():
        document = indexed(api, kb, name, data)
        assert document["status"] == "ready" and document["progress"] == 1.0 and document["chunks"] >= 1, document
    assert api.get(f"/v1/kbs/{kb}").json()["documents"] == 5

    (plates, *_) = _search(api, kb, "How fast do tectonic plates move?")
    assert plates["source"]["document"] == "geology.pdf" and plates["source"]["page"] == 2
    (atp, *_) = _search(api, kb, "What produces ATP in a cell?")
    assert atp["source"] == {"document": "biology.md", "document_id": atp["source"]["document_id"], "section": "Cells"}
    (emperor, *_) = _search(api, kb, "Who was the first Roman emperor?")
    assert emperor["source"]["section"] == "Empire" and "secret" not in emperor["text"]
    (acid, *_) = _search(api, kb, "what pH does an acid have")
    assert acid["source"]["document"] == "chemistry.docx" and acid["source"]["section"] == "Acids"
    (chinese, *_) = _search(api, kb, "光合作用在哪里进行？")
    assert chinese["source"]["document"] == "光合作用.txt" and "叶绿体" in chinese["text"]


FISH_NOTES = """鱼类笔记

蓝线裸顶鲷

蓝线裸顶鲷为辐鳍鱼纲鲈形目龙占鱼科的其中一个种，分布于印度洋及西太平洋。体长可达80公分。

红鳍笛鲷

红鳍笛鲷为辐鳍鱼纲鲈形目笛鲷科的其中一个种，分布于西太平洋。体长可达30公分。

鲤鱼

鲫鱼

草鱼
""".encode()


def test_plain_text_headings_give_each_passage_its_topic(api: httpx.Client, kb: str) -> None:
    """A short line alone above a paragraph is its heading: the passages under it are about
    it, though "体长可达80公分" never names the fish; without it the question's rare words
    pick the sentence that only names it."""
    indexed(api, kb, "鱼类.txt", FISH_NOTES)
    (found, *_) = _search(api, kb, "红鳍笛鲷分布在哪里？")
    assert found["source"]["section"] == "红鳍笛鲷" and found["text"].startswith("红鳍笛鲷为")
    body = api.post(f"/v1/kbs/{kb}/answer", json={"query": "蓝线裸顶鲷的体长可达多少公分？"}).json()
    assert body["answered"] and "80公分" in body["answer"], body
    assert body["evidence"][0]["section"] == "蓝线裸顶鲷"
    # Heading-like lines with no paragraph under them are content, not headings: nothing is lost.
    (listed, *_) = _search(api, kb, "草鱼")
    assert "鲫鱼" in listed["text"] and listed["source"]["section"] == "红鳍笛鲷"


def test_a_chinese_question_ranks_its_passage_by_keywords_not_by_an_english_model(api: httpx.Client, kb: str) -> None:
    """With the English embedding model, Chinese passages' dense ranks are noise: fused into the
    keyword ranks they put other passages of the same pattern first (4 of these 32, before)."""
    cities = ["北京", "上海", "广州", "成都", "西安", "杭州", "南京", "武汉"]
    foods = ["烤鸭", "小笼包", "早茶", "火锅", "肉夹馍", "龙井茶", "盐水鸭", "热干面", "米粉", "汤圆", "煎饼", "粽子"]
    months = ["一月", "三月", "五月", "七月", "九月", "十一月"]
    pairs = list(itertools.islice(itertools.product(cities, foods), 0, 96, 3))
    for n, (city, food) in enumerate(pairs):
        text = f"{city}的{food}很有名。每年{months[n % 6]}，很多游客专程来到{city}品尝{food}，当地人也爱吃{food}。"
        _upload(api, kb, f"note-{n}.txt", text.encode())
    for document in api.get(f"/v1/kbs/{kb}/documents").json():
        assert wait_indexed(api, kb, document["id"])["status"] == "ready"
    for city, food in pairs:
        best = _search(api, kb, f"游客为什么专程去{city}吃{food}？", 5)[0]["text"]
        assert city in best and food in best, (city, food, best)


def test_a_sides_clear_winner_counts_for_more_than_the_other_sides_near_tie() -> None:
    """Fused by score: the passage the dense side is sure of, second by a hair on keywords,
    beats the keyword side's first, which the dense side barely prefers to the last (by ranks
    alone the two tie)."""
    dense = spread({"sure": 0.80, "hair": 0.45, "last": 0.44})
    matched = spread({"sure": 4.9, "hair": 5.0, "last": 1.0})
    assert dense == {"sure": 1.0, "hair": pytest.approx(1 / 36), "last": 0.0}
    assert spread({"only": 3.0}) == {"only": 1.0} and spread({}) == {}
    # Cosines a hair apart are a near tie, and stay one.
    assert spread({"a": 0.50, "b": 0.49}, least=0.1) == {"a": pytest.approx(0.1), "b": 0.0}
    assert spread({"only": 0.3}, least=0.1) == {"only": 1.0}  # a side's only candidate is its best
    # Passages of one sentence: each is its own closest sentence.
    fused = {
        c: Candidate(c, dense_spread=dense[c], sentence_spread=dense[c], keyword_spread=matched[c]).fused(True)
        for c in dense
    }
    assert max(fused, key=fused.get) == "sure" and fused["sure"] - fused["hair"] > 0.4
    # Where the dense side cannot be trusted (an English model, a Chinese question) only keywords count.
    assert Candidate("hair", dense_spread=0.0, keyword_spread=1.0).fused(False) == 1.0


def test_one_sentence_of_a_long_passage_vouches_for_it(api: httpx.Client, kb: str) -> None:
    """The passage's one vector is mostly about other things (cosine 0.33-0.34 to these
    questions, under the 0.4 that vouches for a passage) and a third of each question's words are
    in it; its sentence on Curie is close to both (0.70-0.78). Matched whole, it was declined."""
    assert indexed(api, kb, "notices.txt", NOTICES.encode())["chunks"] == 1
    for question in ("Which sciences did Curie work in?", "In which city did Curie work?"):
        (found,) = _search(api, kb, question)
        assert "physicist and chemist in Paris" in found["text"]
    assert _search(api, kb, "How do I bake bread?") == []


def test_a_document_indexed_before_sentences_is_filled_at_start_up(api: httpx.Client, kb: str, server) -> None:
    """An older version stored passages only. At start-up such a document's sentences are
    embedded in the background; until then its passages stand for their sentences (else the
    documents already filled would outrank it by their sentences alone)."""
    notices = indexed(api, kb, "notices.txt", NOTICES.encode())["id"]
    biology = indexed(api, kb, "biology.md", BIOLOGY_MD)["id"]
    kbs = server.services.kbs
    kbs.vectors.sentences(kb).delete(where={"doc_id": notices})  # as an older version left it
    assert kbs.vectors.without_sentences([(notices, kb), (biology, kb)]) == [(notices, kb)]
    (passage,) = kbs.vectors.passages(kb).get(where={"doc_id": notices})["ids"]
    question = "Which sciences did Curie work in?"
    passages, sentences = kbs.vectors.similar(kb, kbs.embedder.embed([question])[0], 4)
    assert sentences[passage] == passages[passage] < kbs.min_sentence_similarity

    server.restart()
    sentences_of = lambda: server.services.kbs.vectors.sentences(kb).get(where={"doc_id": notices})["ids"]  # noqa: E731
    for _ in range(300):
        if sentences_of():
            break
        time.sleep(0.1)
    assert len(sentences_of()) == 9
    found = _search(api, kb, question)[0]  # its sentence vouches for it again
    assert "physicist and chemist in Paris" in found["text"]


def test_a_question_is_embedded_once_to_be_answered(api: httpx.Client, kb: str, server) -> None:
    """The search's vector of the question is the grounder's too: embedding it is on every
    turn's way to its answer."""
    indexed(api, kb, "biology.md", BIOLOGY_MD)
    kbs, asked = server.services.kbs, []
    embed = kbs.embedder.embed

    def counting(texts: list[str]) -> list[list[float]]:
        asked.extend(texts)
        return embed(texts)

    kbs.embedder.embed = kbs.grounder.embed = counting
    answer = api.post(f"/v1/kbs/{kb}/answer", json={"query": "What produces ATP?"}).json()
    assert answer["answered"] and "ATP" in answer["answer"]
    assert asked.count("What produces ATP?") == 1


@pytest.mark.parametrize(
    "query", ["Who won the 1998 football World Cup?", "足球比赛有哪些规则？", "How do I bake bread?"]
)
def test_unanswerable_questions_find_nothing(api: httpx.Client, kb: str, query: str) -> None:
    indexed(api, kb, "biology.md", BIOLOGY_MD)
    indexed(api, kb, "光合作用.txt", CHINESE_TXT)
    assert _search(api, kb, query) == []


def test_a_chinese_question_is_covered_by_a_smaller_share_of_its_keywords(api: httpx.Client, kb: str) -> None:
    """44 % of this question's characters and pairs are in the passage: the pairs that
    straddle two words ("时植", "会放") are in no passage, so half would refuse it."""
    indexed(api, kb, "光合作用.txt", CHINESE_TXT)
    (found,) = _search(api, kb, "光合作用时植物会放出哪种气体？")
    assert "氧气" in found["text"]
    assert _search(api, kb, "足球比赛有哪些规则？") == []


def test_question_words_never_count_against_a_chinese_question(api: httpx.Client, kb: str) -> None:
    """ "什么是原子？" asks about the passage on atoms; counted, 什么 and the pairs holding it left
    3 of its 8 keywords there, and the tutor said the material did not cover it."""
    assert keywords("什么是原子？") == ["原", "子", "是原", "原子"]
    notes = "原子\n\n原子是构成元素的最小单位。电子在原子核周围运动。\n\n重力\n\n重力是物体之间互相吸引的力。"
    indexed(api, kb, "科学.txt", notes.encode())
    (found, *_) = _search(api, kb, "什么是原子？")
    assert found["text"].startswith("原子是") and found["source"]["section"] == "原子"
    body = api.post(f"/v1/kbs/{kb}/answer", json={"query": "什么是重力？"}).json()
    assert body["answered"] and "互相吸引" in body["answer"], body
    assert _search(api, kb, "什么是火山？") == []


def test_bad_files_are_refused_or_fail_cleanly(start_server) -> None:
    server = start_server(kb_max_upload_bytes=200_000)
    with server.client() as api:
        kb = api.post("/v1/kbs", json={"name": "Course"}).json()["id"]
        good = indexed(api, kb, "biology.md", BIOLOGY_MD)

        for name, data, fragment in [
            ("empty.txt", b"", "empty"),
            ("virus.pdf", b"MZ\x90\x00\x03" + b"\x00" * 500, "not really a PDF"),
            ("tool.exe", b"MZ\x90\x00\x03" + b"\x00" * 500, "binary"),
            ("notes.docx", b"PK\x03\x04" + b"\x00" * 100, "not a DOCX"),
        ]:
            refused = _upload(api, kb, name, data)
            assert refused.status_code == 422 and fragment in refused.json()["detail"], (name, refused.text)
        huge = _upload(api, kb, "huge.txt", b"a" * 300_000)
        assert huge.status_code == 413
        duplicate = _upload(api, kb, "copy.md", BIOLOGY_MD)
        assert duplicate.status_code == 409 and "already indexed" in duplicate.json()["detail"]

        encrypted = indexed(api, kb, "locked.pdf", _pdf(["Secret page"], password="pw"))
        assert encrypted["status"] == "failed" and "encrypted" in encrypted["error"]
        damaged = indexed(api, kb, "broken.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 20)
        assert damaged["status"] == "failed" and damaged["chunks"] == 0, damaged

        # Nothing already indexed was lost, and the failures left no chunks behind.
        assert api.get(f"/v1/kbs/{kb}").json()["chunks"] == good["chunks"]
        assert _search(api, kb, "What produces ATP?")[0]["source"]["document"] == "biology.md"


def test_reindex_and_delete(api: httpx.Client, kb: str) -> None:
    document = indexed(api, kb, "biology.md", BIOLOGY_MD)
    again = api.post(f"/v1/kbs/{kb}/documents/{document['id']}/reindex")
    assert again.status_code == 202
    assert wait_indexed(api, kb, document["id"])["chunks"] == document["chunks"]
    assert api.get(f"/v1/kbs/{kb}").json()["chunks"] == document["chunks"]  # replaced, not doubled
    assert api.delete(f"/v1/kbs/{kb}/documents/{document['id']}").status_code == 204
    assert _search(api, kb, "What produces ATP?") == []
    assert api.delete(f"/v1/kbs/{kb}").status_code == 204
    assert api.get(f"/v1/kbs/{kb}").status_code == 404


def test_kb_bad_requests(api: httpx.Client, kb: str) -> None:
    assert api.post("/v1/kbs", json={"name": ""}).status_code == 422
    assert api.post("/v1/kbs", json={"name": "x", "id": "../etc"}).status_code == 422
    assert api.post("/v1/kbs", json={"name": "x", "id": kb}).status_code == 409
    assert api.post(f"/v1/kbs/{kb}/search", json={"query": ""}).status_code == 422
    assert api.post("/v1/kbs/nope/search", json={"query": "x"}).status_code == 404
    assert api.post(f"/v1/kbs/{kb}/documents", data={"x": "1"}).status_code == 422


async def _final(session: dict[str, Any], question: str) -> dict[str, Any]:
    async with websockets.connect(ws_url(session)) as ws:
        await ws.send(json.dumps({"type": "text", "content": question}))
        return (await collect_answer(ws))[-1]


async def test_answers_are_grounded_cited_and_isolated(api: httpx.Client, server) -> None:
    bio = api.post("/v1/kbs", json={"name": "Biology", "id": "kb-bio"}).json()["id"]
    rome = api.post("/v1/kbs", json={"name": "History", "id": "kb-rome"}).json()["id"]
    indexed(api, bio, "biology.md", BIOLOGY_MD)
    indexed(api, rome, "rome.html", HISTORY_HTML)
    biologist = new_tutor(api, "Ada", kb_ids=[bio])
    historian = new_tutor(api, "Livia", kb_ids=[rome], language="zh")

    answer = await _final(new_session(api, biologist["id"]), "What produces ATP?")
    assert answer["sources"][0]["document"] == "biology.md" and answer["sources"][0]["section"] == "Cells"
    prompt = server.engine.calls[-1][0].content
    assert "powerhouse of the cell" in prompt and "[1]" in prompt

    # The historian's students never get the biology material, and are told so in Chinese.
    calls = len(server.engine.calls)
    refused = await _final(new_session(api, historian["id"]), "What produces ATP?")
    assert refused["sources"] == [] and "课程资料" in refused["content"]
    assert len(server.engine.calls) == calls  # the model was not asked to invent an answer
    assert all(
        "powerhouse" not in m.content for call in server.engine.calls for m in call if "Livia" in call[0].content
    )

    # A session may add the web backend's own knowledge base to its tutor's.
    with_kb = api.post("/v1/sessions", json={"tutor_id": historian["id"], "kb_id": bio}).json()
    assert (await _final(with_kb, "What produces ATP?"))["sources"][0]["document"] == "biology.md"


@pytest.fixture
def chroma_server(tmp_path) -> Any:
    from tests.kit.servers import running_chroma

    with running_chroma(tmp_path / "chroma-server") as port:
        yield port


def test_a_chroma_server_when_chroma_host_is_set(start_server, chroma_server: int) -> None:
    import chromadb

    server = start_server(chroma_host="127.0.0.1", chroma_port=chroma_server)
    with server.client() as api:
        kb = api.post("/v1/kbs", json={"name": "Remote"}).json()["id"]
        assert indexed(api, kb, "biology.md", BIOLOGY_MD)["status"] == "ready"
        assert _search(api, kb, "What produces ATP?")[0]["source"]["document"] == "biology.md"
    remote = chromadb.HttpClient(host="127.0.0.1", port=chroma_server)
    counts = {c.name: c.count() for c in remote.list_collections()}
    passages, sentences = sorted(counts, key=len)
    # Both chunks and their three sentences live on the server, not in DATA_DIR.
    assert (counts[passages], counts[sentences]) == (2, 3)
    assert not (server.settings.data_dir / "chroma").exists()

    # Indexed by a version without sentences: still searched (by its passages), and its
    # sentences are embedded at the next start.
    remote.delete_collection(sentences)
    with server.client() as api:
        assert _search(api, kb, "What produces ATP?")[0]["source"]["document"] == "biology.md"
    server.restart()
    deadline = time.monotonic() + 60
    while {c.name: c.count() for c in remote.list_collections()} != counts:
        assert time.monotonic() < deadline, {c.name: c.count() for c in remote.list_collections()}
        time.sleep(0.2)
    with server.client() as api:
        (document,) = api.get(f"/v1/kbs/{kb}/documents").json()
        assert api.post(f"/v1/kbs/{kb}/documents/{document['id']}/reindex").status_code == 202
        wait_indexed(api, kb, document["id"])
        assert {c.name: c.count() for c in remote.list_collections()} == counts
        assert api.delete(f"/v1/kbs/{kb}/documents/{document['id']}").status_code == 204
        assert {c.name: c.count() for c in remote.list_collections()} == {passages: 0, sentences: 0}


def test_the_multilingual_embedder_matches_chinese_and_english_meaning() -> None:
    from kb.embeddings import UniversalEmbedder

    embedder = UniversalEmbedder()
    embedder.warmup()
    question, answer, other, english = embedder.embed(
        [
            "光合作用需要什么？",
            "光合作用需要阳光、水和二氧化碳。",
            "长城位于中国北方。",
            "Photosynthesis needs sunlight and water.",
        ]
    )
    close = lambda a, b: sum(x * y for x, y in zip(a, b, strict=True))  # noqa: E731 (unit vectors)
    assert len(question) == 512 and abs(close(question, question) - 1) < 1e-3
    assert close(question, answer) > close(question, other) + 0.1
    assert close(answer, english) > close(answer, other) + 0.1  # across languages too
