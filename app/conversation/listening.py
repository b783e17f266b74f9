"""A live microphone cut into turns, for every transport that carries one (the WebSocket's
streamed `audio` chunks, a WebRTC peer's audio track).

The VAD's turn-taking says when the student starts (a barge-in signal) and stops speaking.
Recognition begins in the closing pause: if the student goes on, that guess is discarded; if
the turn ends, its transcript is already under way. What that guess says also decides when the
pause is over (`sounds`, with the conversation's end-of-turn reader where one runs): a
finished question ends the turn as soon as it is heard, words only perhaps finished (unsure)
wait longer, words left hanging longer still, and while either waits the answer to them is
begun (`ConversationService.foresee`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from app.conversation.frames import SpeechIn
from app.conversation.service import ConversationService, consume
from app.conversation.sessions import SessionInfo
from app.core.engines import ASR, ListenFor, Transcript, TurnEnd, Verdict
from app.core.settings import Settings
from app.speech.registry import turn_config
from app.speech.vad import Paused, SpeechStarted, TurnDetector, sounds
from app.speech.vocabulary import hear

log = logging.getLogger(__name__)
Guess = tuple[Transcript, Verdict | None]


def _foresight_done(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.info("the held words' answer was not begun ahead (%s); the turn will begin it", exc)


def _guess(asr: ASR, judge: TurnEnd | None, pcm: Any, listen: ListenFor) -> Guess:
    """The early transcript and what its words say of the turn, in one trip off the loop."""
    transcript = hear(asr, pcm, listen)
    try:
        return transcript, sounds(transcript.text, judge)
    except Exception as exc:  # a failed reader costs its reading, never the turn
        log.warning("the end-of-turn reader failed (%s); the words' punctuation decides", exc)
        return transcript, sounds(transcript.text)


async def _transcript(guess: asyncio.Future[Guess]) -> Transcript:
    return (await guess)[0]


class LiveMicrophone:
    def __init__(
        self, conversation: ConversationService, session: SessionInfo, settings: Settings, chat_id: str = ""
    ) -> None:
        self._conversation = conversation
        self._session, self._chat_id = session, chat_id
        vad, self._asr = conversation.listening()
        self._judge_with = conversation.turn_end()
        config = turn_config(settings)
        self._detector = TurnDetector(vad, config)
        self._hold_s = config.hold_ms / 1000
        self._early: tuple[float, asyncio.Future[Guess]] | None = None
        self._foreseen_at = -1.0  # the pause whose held words `foresee` was asked about
        self._foresight: asyncio.Future[None] | None = None  # kept: a bare task may be collected

    @property
    def speaking(self) -> bool:
        return self._detector.speaking

    async def hear(self, samples: np.ndarray, *, end: bool = False) -> list[SpeechStarted | SpeechIn]:
        """16 kHz mono float32 in; out, in order: `SpeechStarted` when the student starts
        speaking, and each finished turn as a `SpeechIn`."""
        if self._early and self._detector.awaiting:
            if not self._early[1].done():
                # Audio coming faster than it is spoken (a client sending a recording as
                # chunks) waits for the words here, as a live microphone's would in the pause.
                await asyncio.wait([self._early[1]], timeout=self._hold_s)
            self._judge(*self._early)
        events = await asyncio.to_thread(self._detector.feed, samples) if len(samples) else []
        if end and (last := self._detector.flush()) is not None:
            events.append(last)
        heard: list[SpeechStarted | SpeechIn] = []
        for event in events:
            if isinstance(event, SpeechStarted):
                heard.append(event)
            elif isinstance(event, Paused):
                listen = await self._conversation.listening_for(self._session)
                task = asyncio.ensure_future(
                    asyncio.to_thread(_guess, self._asr, self._judge_with, event.audio, listen)
                )
                task.add_done_callback(consume)
                self._early = (event.ended_at, task)
            else:
                guess = self._early[1] if self._early and self._early[0] == event.ended_at else None
                self._early = None
                early = asyncio.ensure_future(_transcript(guess)) if guess else None
                if early:
                    early.add_done_callback(consume)
                heard.append(SpeechIn(event.audio, early))
        return heard

    def _judge(self, ended_at: float, guess: asyncio.Future[Guess]) -> None:
        if not guess.done():
            return  # the hold ran out first; the next chunk looks again
        failed = guess.cancelled() or guess.exception() is not None
        transcript, verdict = (None, None) if failed else guess.result()
        self._detector.judge(ended_at, verdict)
        if verdict in ("hanging", "unsure") and transcript is not None and self._foreseen_at != ended_at:
            # Held or unsure: the pause is idle time, and the words heard so far are likely the
            # question.
            self._foreseen_at = ended_at
            foresight = self._conversation.foresee(self._session, self._chat_id, transcript.text)
            self._foresight = asyncio.ensure_future(foresight)
            self._foresight.add_done_callback(_foresight_done)
