"""What a turn is about: the course material, or the conversation itself.

A greeting, a thank-you, or a request about the last answer ("explain it more simply", "give
an example", "再说一遍") is conversation: the tutor answers it with the chat's history, not from
the material, and cites nothing. Every other question to a tutor with knowledge bases is
about the material and must rest on it.

A question about the material may lean on the one before: "Where does it take place?" after
"What is photosynthesis?", "它全长多少？" after a question on 长城. Alone it finds nothing (or
the wrong thing), so it is read again about the topic of the last answer that cited the
material (its heading, else its document's name): pronouns stand for the topic, and a question
without one ("What is released?") gets the topic before it when it is declined as asked.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

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


# Pronouns that point back at the topic: a possessive (group 1) becomes "<topic>'s". "其他"
# and "其它" mean "other", not "it".
_BACK_EN = re.compile(r"\b(?:(its|his|their)|it|he|him|she|her|they|them)\b", re.IGNORECASE)
_BACK_ZH = re.compile(r"(?<!其)[它他她]们?")


def refers_back(question: str) -> bool:
    """Whether the question points back with a pronoun ("Where was she born?", "它在哪里？")."""
    return bool(_BACK_EN.search(question) or _BACK_ZH.search(question))


def about(question: str, topic: str) -> str:
    """The question asked about `topic`: its pronouns stand for it, or, with none, it comes first."""
    if not refers_back(question):
        return f"{topic}：{question}" if mostly_cjk(question) else f"{topic}: {question}"
    question = _BACK_EN.sub(lambda m: f"{topic}'s" if m.group(1) else topic, question)
    # Spaced off: the character pairs straddling the join ("长城全长" → 城全) are no words the
    # student said, yet rare in the material, so they would weigh against every sentence.
    return " ".join(_BACK_ZH.sub(f" {topic} ", question).split())


def ground_in_context(ground: Callable[[str], Grounding], question: str, topic: str) -> Grounding:
    """What the material says to a question that may lean on the last answer's `topic` ("" for
    none). A pronoun is read as the topic first. Where the material says nothing of the topic
    to it, the question as asked is answered only if it names what its evidence is about ("How
    old was Beyoncé when she met…" after an answer on the iPod): read as asked, "他的根有什么
    特点？" finds some other plant's roots (CMRC 2018 trial follow-ups on topics the course
    lacks: 28 of 72 answered wrongly so, 11 without). A question without a pronoun is read as
    asked first. The reading that decided says so in its reason, for the teacher."""
    if not topic or topic.casefold() in question.casefold():
        return ground(question)
    pointing = refers_back(question)
    as_asked = None if pointing else ground(question)
    if as_asked is not None and as_asked.answered:
        return as_asked
    read = ground(about(question, topic))
    note = f"read as “{read.question}” after an answer on “{topic}”: "
    if read.answered:
        return dataclasses.replace(read, reason=note + read.reason)
    as_asked = as_asked or ground(question)
    if pointing and as_asked.answered and not _names_its_evidence(question, as_asked):
        return dataclasses.replace(read, reason=note + read.reason)
    return as_asked


def _names_its_evidence(question: str, grounding: Grounding) -> bool:
    """Whether the question names a topic of its evidence: its heading or document name, or
    (not Chinese) a word of one ("Chopin's" for "Frédéric Chopin")."""
    asked = question.casefold()
    for evidence in grounding.evidence:
        for topic in topics(evidence.passage.source):
            if topic.casefold() in asked or (not mostly_cjk(topic) and _words(topic) & _words(asked)):
                return True
    return False


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.casefold()) if len(w) > 2 and w not in FUNCTION_WORDS}
