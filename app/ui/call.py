"""The Student tab's live call: FastRTC's component (`app.rtc.component`) answered by the
server's own relay-only peers, and the call's words followed in the chat."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import gradio as gr

from app.conversation.sessions import SessionInfo
from app.rtc.component import CallDesk, live_call
from app.services import Services
from app.ui.chat import Chat, show

OpenSession = Callable[[int, dict[str, Any]], Awaitable[tuple[dict[str, Any], SessionInfo]]]


class CallPanel:
    def __init__(self, services: Services, open_session: OpenSession) -> None:
        engines = services.engines
        self.available = engines.asr is not None and engines.tts is not None and services.calls.configured
        self.desk = CallDesk(services.calls, services.settings, open_session)
        self.concurrency = services.settings.max_sessions

    async def follow(self, webrtc_id: str | None, history: Chat) -> AsyncIterator[tuple[Chat, dict[str, Any]]]:
        """The live call's words in the chat, from its start (connected) to its end."""
        feed = self.desk.feeds.get(webrtc_id or "")
        if feed is None:
            # Yielding nothing would empty the chat and forget the saved session.
            yield gr.skip(), gr.skip()
            return
        history = list(history)
        yield history, feed.state
        while (frame := await feed.frames.get()) is not None:
            if show(frame, history):
                yield history, feed.state

    async def page_closed(self, request: gr.Request) -> None:
        await self.desk.forget(request.session_hash)

    def build(self, chat: gr.Chatbot, saved: gr.BrowserState) -> None:
        with gr.Row(visible=self.available):
            # Live: talk, and see and hear the tutor answer (WebRTC, relayed through TURN).
            call = live_call(
                self.desk,
                label="Live call",
                elem_id="live-call",
                full_screen=False,
                button_labels={"start": "Start call", "stop": "Hang up", "waiting": "Connecting…"},
            )
        call.tick(self.follow, [call, chat], [chat, saved], concurrency_limit=self.concurrency)
