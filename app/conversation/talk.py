"""What a turn is about: the course material, or the conversation itself.

A greeting, a thank-you, or a request about the last answer ("explain it more simply", "give
an example", "再说一遍") is conversation: the tutor answers it with the chat's history, not from
the material, and cites nothing. Every other question to a tutor with knowledge bases is
about the material and must rest on it.

A question about the material may lean on the one before: "Where does it take place?" after
"What is photosynthesis?", "它全长多少？" after a question on 长城. Alone it finds nothing (or
the wrong thing), so it is read again about the chat's topic (`last_topic`): pronouns stand
for the topic, and a question without one ("What is released?") gets the topic before it when
it is declined as asked.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.conversation.prompt import ALL_SAID, MORE, NOT_COVERED, said
from app.core.errors import NotFound
from app.speech.sentences import rejoin
from kb.chunking import split_sentences
from kb.grounding import FUNCTION_WORDS, Grounding
from kb.passages import topics
from kb.retrieval import mostly_cjk

if TYPE_CHECKING:
    from kb.passages import Passage
    from kb.service import KnowledgeBases
    from tutors.store import Tutor

# Small talk, by what it calls for; a message is small talk when it is nothing else ("Hi
# there!", "Thanks, that helps.", "好的，谢谢老师！", "OK bye"). First kind found wins.
_SOCIAL = {
    "farewell": "bye|goodbye|bye-bye|see you|see you later|see you soon|see you tomorrow|good night|goodnight|"
    "再见|再見|拜拜|晚安|下次见|下次見|明天见",
    "thanks": "thanks|thank you|thank u|thank|thx|many thanks|谢谢|謝謝|多谢|多謝|感谢|感謝|谢啦|谢了|辛苦了",
    "greeting": "hi|hello|hey|good morning|good afternoon|good evening|how are you|"
    "你好|您好|你好吗|嗨|哈喽|哈囉|早上好|下午好|晚上好|早安|老师好|老師好|老师早|大家好",
    "ok": "ok|okay|great|cool|nice|awesome|got it|i see|i understand|i understand now|yes|yeah|yep|yes please|"
    "no|sure|good|alright|all right|understood|no problem|oh|"
    "好的|好|好吧|明白了|明白|知道了|懂了|嗯|是的|是|不是|对|對|没问题|沒問題|没事|不用了",
}
_FILLER = (
    "there|everyone|all|so much|a lot|very much|that helps|that's helpful|that is helpful|it's clear|"
    "teacher|sir|miss|you|老师|老師|你|您|我|啊|呀|哦|哈|了|啦"
)
_PHRASES = {phrase: kind for kind, phrases in _SOCIAL.items() for phrase in phrases.split("|")}
_PHRASES.update({phrase: "" for phrase in _FILLER.split("|")})
_KIND_ORDER = list(_SOCIAL)
_REPLIES = {
    "greeting": {
        "en": "Hello! What would you like to ask{about}?",
        "zh": "你好！{about}有什么想问的，尽管问我。",
        "zh-hant": "你好！{about}有什麼想問的，儘管問我。",
    },
    "thanks": {
        "en": "You're welcome! Is there anything else you'd like to ask?",
        "zh": "不客气！还有什么想问的吗？",
        "zh-hant": "不客氣！還有什麼想問的嗎？",
    },
    "farewell": {
        "en": "Goodbye, and good luck with your studies!",
        "zh": "再见，祝你学习顺利！",
        "zh-hant": "再見，祝你學習順利！",
    },
    "ok": {
        "en": "All right. What would you like to ask next?",
        "zh": "好的。还有什么想问的吗？",
        "zh-hant": "好的。還有什麼想問的嗎？",
    },
}
_ABOUT = {"en": " about {subject}", "zh": "关于{subject}，", "zh-hant": "關於{subject}，"}


@functools.lru_cache(maxsize=256)
def small_talk(text: str) -> str | None:
    """What kind of small talk the message is ("greeting", "thanks", "farewell", "ok"), or None.
    Read phrase by phrase over the positions it can reach (no regex backtracking: "老师好" is
    老师好 or 老师 + 好); "OK?" and "是不是？" ask something and are not small talk."""
    text = unicodedata.normalize("NFKC", text).strip().lower()  # "ＯＫ" from a Chinese keyboard
    if len(text) > 80:
        return None
    reached: dict[int, set[str]] = {_skip(text, 0): set()}
    for at in range(len(text) + 1):
        if at not in reached or at == len(text):
            continue
        for phrase, kind in _PHRASES.items():
            end = at + len(phrase)
            glued = phrase[-1].isascii() and text[end : end + 1].isascii() and text[end : end + 1].isalpha()
            if text.startswith(phrase, at) and not glued:  # "hint" is not "hi"
                reached.setdefault(_skip(text, end), set()).update(reached[at] | ({kind} - {""}))
    kinds = reached.get(len(text))
    kind = next((k for k in _KIND_ORDER if kinds and k in kinds), None)
    return None if kind == "ok" and ("?" in text or "？" in text) else kind


def _skip(text: str, at: int) -> int:
    """Past the spaces and marks from `at`."""
    while at < len(text) and not text[at].isalnum():
        at += 1
    return at


def small_talk_reply(text: str, tutor: Tutor) -> str | None:
    """The tutor's set reply to small talk, in its language (its own greeting to a greeting),
    for a model that cannot be trusted to chat: SmolLM2 greeted with "你好！" loops."""
    kind = small_talk(text)
    if kind is None:
        return None
    if kind == "greeting" and tutor.greeting.strip():
        return tutor.greeting.strip()
    about = said(_ABOUT, tutor.language).format(subject=tutor.subject) if tutor.subject.strip() else ""
    return said(_REPLIES[kind], tutor.language).format(about=about)


# The whole message is a nudge about the last answer.
_NUDGE = re.compile(
    r"^\W*(why|how|really|more|again|tell me more|go on|continue|and then|what do you mean|example|for example|"
    r"(give|show) (me )?(an|another) example( of (that|this|it))?( please)?|more please|keep going|explain more|"
    r"huh|what|pardon|what did you say|repeat please|come again|"
    r"为什么|为什么呢|为啥|怎么|真的吗|然后呢|继续|继续说|接着说|还有呢|还有吗|比如呢|例如|有例子吗|具体(一)?点)\W*$",
    re.IGNORECASE,
)
# The message asks to hear the last answer differently.
_AGAIN = re.compile(
    r"\b(explain|say|put|tell|describe) (it|that|this)\b.{0,20}\b(again|simpl|easier|differently|another way)|"
    r"\b(more simply|simpler|in simple (words|terms)|in other words|once more|say that again|repeat (that|it)|"
    r"i (still )?(don't|do not|didn't) (really )?(understand|get it)|what do you mean|"
    r"(can|could) you (elaborate|clarify)|(give|show) (me )?(an|another) example|tell me more|"
    r"summari[sz]e (that|it))\b|"
    r"再说一遍|再讲一遍|再解释|重复一下|(再|多)(说|讲)(一点|一些|点)|(说|讲)(得)?详细(一)?点|详细(一)?点|详细(说说|讲讲)|"
    r"简单(一|一点|一些|点)(说|讲)?|通俗(一点|地)?(说|讲)|举个例子|什么意思|没(太)?(听|看)?懂|(不太|不)(明白|懂)|"
    r"有点不懂|再讲讲|换(个|一种)(说法|方式)",
    re.IGNORECASE,
)
# The message asks to hear the last answer again, as it was.
_REPEAT = re.compile(
    r"\b(say (that|it) again|repeat (that|it|please)|pardon|what did you say|come again|once more)\b|"
    r"再说一遍|再讲一遍|重复一下|再说一次|没听(清|到)",
    re.IGNORECASE,
)
# What a request about the last answer says besides the request: "Can you explain that more
# simply?", "老师，你能再解释一下吗？". Any other word makes it a question about the material
# ("What do you mean by osmosis?", "光合作用是什么意思？").
_REQUEST_WORDS = frozenset(
    "can could would will you please me it that this again explain say put tell describe more simply simpler "
    "simple easier in other words terms once what do does mean i don't dont didn't do not understand get "
    "differently another way repeat clarify elaborate summarize summarise a an the sorry still really give show "
    "example for keep going slowly slower hmm oh wait but ok okay thanks thank teacher sir miss your answer part "
    "point sentence first second last one bit little about".split()
)
_REQUEST_CHARS = frozenset(
    "你您能可以请再一下吗呢吧啊呀了的这个那它是我不还说讲遍次么什意思懂明白解释简单点些通俗地举例子换种方式法重复没听看多详细得"
    "给有如啥具体继续接着太老师嗯哦好谢但刚才答案回答句段第一二三慢清楚"
)


# Asking what a word means is asking what it is: the material defines it, it does not say
# what it "means" ("光合作用是什么意思？" read as "什么是光合作用？"). Read without a regex: a
# pattern over a 4,000-character question took minutes, holding the GIL.
_MEANS_ZH = ("是什么意思", "是指什么", "指的是什么")
_POINTING = frozenset("这 那 它 这个 那个 这句 这句话 这段 那句话 你的意思 你说的".split())


def plainly(question: str) -> str:
    """The question as the material answers it: "X是什么意思？" as "什么是X？", "What does X
    mean?" as "What is X?"; any other (and "这句话是什么意思？") as it is."""
    asked = " ".join(question.split()).rstrip("？?呢 ")
    lower = asked.lower()
    subject = ""
    if ending := next((e for e in _MEANS_ZH if asked.endswith(e)), ""):
        subject = asked[: -len(ending)].strip(" ，,")
        return question if not subject or subject in _POINTING else f"什么是{subject}？"
    if lower.startswith("what do you mean by "):
        subject = asked[len("what do you mean by ") :]
    elif lower.startswith("what does ") and lower.endswith(" mean"):
        subject = asked[len("what does ") : -len(" mean")]
    return f"What is {subject.strip()}?" if subject.strip() else question


def asks_again(text: str) -> bool:
    """Whether the request is to hear the last answer again, as it was ("再说一遍", "Pardon?")."""
    return bool(_REPEAT.search(text))


def is_conversation(text: str) -> bool:
    """True for small talk and requests about the last answer, which need no material."""
    text = text.strip()
    if small_talk(text) or _NUDGE.match(text):
        return True
    again = _AGAIN.search(text) if len(text) <= 160 else None
    if again is None:
        return False
    end = again.end()
    while end < len(text) and text[end].isascii() and text[end].isalpha():  # "simpl" → "simply"
        end += 1
    rest = text[: again.start()] + " " + text[end:]
    words = re.findall(r"[a-z']+", rest.lower())
    hanzi = re.findall(r"[\u3400-\u9fff]", rest)
    return all(w in _REQUEST_WORDS or w in FUNCTION_WORDS for w in words) and all(c in _REQUEST_CHARS for c in hanzi)


# Pronouns that point back at the topic: lower case, or capitalised opening a sentence ("He"
# elsewhere is helium, "IT" information technology). his/its/their become "<topic>'s";
# "her" may be either, and becomes the topic. Not "他" in 其他/其它 ("other"), 吉他, 维他命, 他人.
_BACK_EN = re.compile(
    r"(?:(?<![\w'’-])(?:its|his|their|it|he|him|she|her|they|them)"
    r"|(?:^|(?<=[.?!]\s))(?:Its|His|Their|Her|It|He|She|They))\b"
)
_POSSESSIVE = frozenset({"its", "his", "their"})
_BACK_ZH = re.compile(r"(?<![其吉维])[它他她]们?(?!人)")


def refers_back(question: str) -> bool:
    """Whether the question points back with a pronoun ("Where was she born?", "它在哪里？")."""
    return bool(_BACK_EN.search(question) or _BACK_ZH.search(question))


def names(question: str, topic: str) -> bool:
    """Whether the question names the topic: anywhere if Chinese, else as whole words ("Art" is
    not in "started")."""
    if mostly_cjk(topic):
        return topic in question
    return re.search(rf"(?<![a-z0-9]){re.escape(_fold(topic))}(?![a-z0-9])", _fold(question)) is not None


def about(question: str, topic: str) -> str:
    """The question asked about `topic`: its pronouns stand for it, or, with none, it comes first."""
    if not refers_back(question):
        return f"{topic}：{question}" if mostly_cjk(question) else f"{topic}: {question}"
    # Functions, not templates: a heading may hold a backslash ("\\d in regular expressions").
    question = _BACK_EN.sub(lambda m: f"{topic}'s" if m[0].casefold() in _POSSESSIVE else topic, question)
    # Spaced off: the character pairs straddling the join ("长城全长" → 城全) are no words the
    # student said, yet rare in the material, so they would weigh against every sentence.
    return " ".join(_BACK_ZH.sub(lambda _: f" {topic} ", question).split())


def last_topic(recent: Iterable[tuple[str, str, dict[str, Any] | None]], material: Callable[[], list[str]]) -> str:
    """The topic a follow-up leans on, from the chat's latest messages (newest first: role,
    text, meta): that of the latest answer citing the material (its first source's heading, or
    document name) or, where an answer did not, a topic of the `material` (its headings and
    document names) that the question before it named: after "Who was Marie Curie's
    husband?", declined, "Where was she born?" is about Marie Curie, not an older answer's
    topic. "" where none of them has one."""
    course: list[str] | None = None
    for role, text, meta in recent:
        if role == "assistant":
            if sources := (meta or {}).get("sources"):
                return next(iter(topics(sources[0])), "")
            continue
        if course is None:  # headings without their gloss, as sources give them
            course = [topic for heading in material() for topic in topics({"section": heading})]
        naming, _, topic = max(((_naming(text, t), len(t), t) for t in course), default=(0, 0, ""))
        if naming:
            return topic
    return ""


def _naming(question: str, topic: str) -> int:
    """How far the question names the topic: whole (best), else (not Chinese) by how many of
    its words ("Chopin" for "Frédéric Chopin"), else not (0)."""
    if names(question, topic):
        return 1_000
    return 0 if mostly_cjk(topic) else len(_words(topic) & _words(question))


def ground_in_context(ground: Callable[[str], Grounding], question: str, topic: str) -> Grounding:
    """What the material says to a question that may lean on the chat's `topic` (`last_topic`;
    "" for none). A pronoun is read as the topic first. Where the material says nothing of the topic
    to it, the question as asked is answered only if it names what its evidence is about ("How
    old was Beyoncé when she met…" after an answer on the iPod): read as asked, "他的根有什么
    特点？" finds some other plant's roots (CMRC 2018 trial follow-ups on topics the course
    lacks: 28 of 72 answered wrongly so, 11 without). A question without a pronoun is read as
    asked first. The reading that decided says so in its reason, for the teacher."""
    if not topic or names(question, topic):
        return ground(question)
    pointing = refers_back(question)
    as_asked = None if pointing else ground(question)
    if as_asked is not None and as_asked.answered:
        return as_asked
    read = ground(about(question, topic))
    note = f"read as “{read.question}”, the chat being on “{topic}”: "
    if read.answered:
        return dataclasses.replace(read, reason=note + read.reason)
    as_asked = as_asked or ground(question)
    if pointing and as_asked.answered and not _names_its_evidence(question, as_asked):
        return dataclasses.replace(read, reason=note + read.reason)
    return as_asked


def _names_its_evidence(question: str, grounding: Grounding) -> bool:
    """Whether the question names a topic of its evidence: its heading or document name, or
    (not Chinese) a word of one ("Chopin's" for "Frédéric Chopin")."""
    return any(_naming(question, t) for e in grounding.evidence for t in topics(e.passage.source))


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", _fold(text)) if len(w) > 2 and w not in FUNCTION_WORDS}


def _fold(text: str) -> str:
    """Lower case without accents: students write "Beyonce" for "Beyoncé"."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()


def course_words(kbs: KnowledgeBases, kb_ids: list[str]) -> list[str]:
    """Document names as a person would say them (`光合作用_第三章.pdf` → `光合作用 第三章`),
    then the material's section headings: bench_voice's Chinese notes (a heading per
    topic) were heard right for 重力 and 四季 with them (中立, 四径 without)."""
    titles = []
    for kb_id in kb_ids:
        try:
            documents = kbs.documents(kb_id)
        except NotFound:  # deleted since: a hint is not worth failing the question for
            continue
        titles += [re.sub(r"[_\s]+", " ", Path(d.filename).stem).strip() for d in documents]
    return titles + kbs.headings(kb_ids)


def more_answer(
    text: str, recent: Iterable[tuple[str, str, Any]], search: Callable[[str], list[Passage]], language: str
) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """A request about the last answer to a tutor that quotes its material, answered from it:
    (what the tutor says, what it cites, its grounding). The last answer about the material
    (`recent` newest first: role, text, meta; small talk and "nothing more" passed over) again
    where asked ("再说一遍"); else the next sentences of its passage that the chat has not
    quoted; "that is all the notes say" where none is left; the decline where it quoted nothing."""
    answers = [
        (content, meta if isinstance(meta, dict) else {}) for role, content, meta in recent if role == "assistant"
    ]
    about = [
        (c, m) for c, m in answers if "grounding" in m and (m.get("sources") or m["grounding"].get("style") != "more")
    ]
    content, meta = about[0] if about else ("", {})
    sources = _cited(meta)
    if not sources:
        return said(NOT_COVERED, language), [], {"answered": False, "reason": "the last answer quoted nothing"}
    if asks_again(text):
        return content, sources, {"answered": True, "style": "again"}
    quoted = [source["snippet"] for _, m in answers for source in _cited(m)]
    snippet = sources[0]["snippet"]
    found = [m for p in search(snippet) if (m := more_of(snippet, p.text, quoted)) is not None]
    if not found or not found[0]:
        reason = "its passage says nothing more" if found else "its passage is no longer in the material"
        return said(ALL_SAID, language), [], {"answered": False, "style": "more", "reason": reason}
    return (
        said(MORE, language) + found[0],
        [{**sources[0], "n": 1, "snippet": found[0]}],
        {"answered": True, "style": "more"},
    )


def _cited(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored answer's sources that quote the material."""
    return [s for s in meta.get("sources") or [] if isinstance(s, dict) and s.get("snippet")]


def more_of(snippet: str, passage: str, quoted: Iterable[str] = (), sentences: int = 2) -> str | None:
    """What `passage` says beyond the `snippet` it holds and the other `quoted` text: the
    sentences after the snippet's, or before them where nothing new follows; "" if nothing new
    is left; None if the passage does not hold the snippet."""
    parts, target = split_sentences(passage), _squash(snippet)
    sentences_at = [i for i, part in enumerate(parts) if part.rstrip("”’」』）)\"'").endswith(_ENDS)]  # not headings
    held = [i for i in sentences_at if _squash(parts[i]) in target]
    if not any(target.startswith(_squash(parts[i])) for i in held):
        return None
    said_already = [_squash(q) for q in (*quoted, snippet)]
    new = [i for i in sentences_at if not any(_squash(parts[i]) in q for q in said_already)]
    chosen = [i for i in new if i > held[-1]][:sentences] or [i for i in new if i < held[0]][-sentences:]
    return rejoin([parts[i] for i in chosen])


_ENDS = tuple(".!?。！？；")


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)
