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
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

from kb.grounding import FUNCTION_WORDS, Grounding
from kb.passages import topics
from kb.retrieval import mostly_cjk

_SMALL_TALK = re.compile(
    r"^\W*(hi|hello|hey|good (morning|afternoon|evening)|thanks?( you)?( so much| a lot)?|thank you|"
    r"bye|goodbye|see you|ok(ay)?|great|cool|nice|got it|i see|yes|no|sure|"
    r"你好|您好|嗨|早上好|下午好|晚上好|谢谢(你|您|老师)?|再见|好的|明白了|知道了|嗯|是的|不是)"
    r"(\W+(teacher|sir|miss|老师))?\W*$",
    re.IGNORECASE,
)
# The whole message is a nudge about the last answer.
_NUDGE = re.compile(
    r"^\W*(why|how|really|more|again|tell me more|go on|continue|and then|what do you mean|example|"
    r"(give|show) (me )?(an|another) example( of (that|this|it))?|为什么|怎么|真的吗|然后呢|继续|还有呢|比如呢)\W*$",
    re.IGNORECASE,
)
# The message asks to hear the last answer differently.
_AGAIN = re.compile(
    r"\b(explain|say|put|tell|describe) (it|that|this)\b.{0,20}\b(again|simpl|easier|differently|another way)|"
    r"\b(more simply|simpler|in simple (words|terms)|in other words|once more|say that again|repeat (that|it)|"
    r"i (don't|do not|didn't) (understand|get it)|what do you mean|(can|could) you (elaborate|clarify)|"
    r"summari[sz]e (that|it))\b|"
    r"再说一遍|再讲一遍|再解释|重复一下|简单(一|一点|一些|点)(说|讲)?|通俗(一点|地)?(说|讲)|举个例子|什么意思|没(听|看)懂|不明白|不懂|"
    r"换(个|一种)(说法|方式)",
    re.IGNORECASE,
)


def is_conversation(text: str) -> bool:
    """True for small talk and requests about the last answer, which need no material."""
    text = text.strip()
    return bool(_SMALL_TALK.match(text) or _NUDGE.match(text) or (len(text) <= 160 and _AGAIN.search(text)))


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
