"""What a turn is about: the course material, or the conversation itself.

A greeting, a thank-you, or a request about the last answer ("explain it more simply", "give
an example", "再说一遍") is conversation: the tutor answers it with the chat's history, not from
the material, and cites nothing. Every other question to a tutor with knowledge bases is
about the material and must rest on it.
"""

from __future__ import annotations

import re

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
