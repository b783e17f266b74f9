"""The Student tab's live call in real headless Chromium, relay-only through a real coturn:
press Start call, ask aloud through the fake microphone, see the words in the chat and the
tutor's lip-synced face on the call."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from app.speech.audio import wav_bytes
from tests.kit.browser import open_ui
from tests.kit.calls import loopback_coturn
from tests.kit.live import LiveServer, new_tutor
from tests.kit.media import portrait_video
from tests.kit.speech import say, with_silence
from turn.coturn import CoturnConfig

SECRET = "ui-call-secret"
# Keeps every RTCPeerConnection the page makes, to read its configuration and stats.
RECORD_PEERS = """
window.__peers = [];
const Native = window.RTCPeerConnection;
window.RTCPeerConnection = function (...args) { const pc = new Native(...args); window.__peers.push(pc); return pc; };
window.RTCPeerConnection.prototype = Native.prototype;
"""
# The pair the transport has selected (its `selectedCandidatePairId`, as the spec reports it):
# searching for a nominated, succeeded pair once found none in CI while the call was playing.
SELECTED_PAIR = """async () => {
  const pc = window.__peers[window.__peers.length - 1];
  const stats = [...(await pc.getStats()).values()];
  const byId = Object.fromEntries(stats.map(s => [s.id, s]));
  const transport = stats.find(s => s.type === 'transport' && s.selectedCandidatePairId);
  const pair = transport ? byId[transport.selectedCandidatePairId]
    : stats.find(s => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
  if (!pair) return null;
  return {policy: pc.getConfiguration().iceTransportPolicy,
          local: byId[pair.localCandidateId].candidateType, remote: byId[pair.remoteCandidateId].candidateType};
}"""


# A machine without a camera: video is refused as browsers refuse it, the microphone works.
NO_CAMERA = """
const media = navigator.mediaDevices, ask = media.getUserMedia.bind(media), list = media.enumerateDevices.bind(media);
media.getUserMedia = (wanted) => wanted && wanted.video
  ? Promise.reject(new DOMException("Requested device not found", "NotFoundError")) : ask(wanted);
media.enumerateDevices = async () => (await list()).filter((device) => device.kind !== "videoinput");
"""


@pytest.fixture(scope="module")
def coturn() -> Iterator[CoturnConfig]:
    with loopback_coturn(SECRET) as turn:
        yield turn.config


def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _call_server(start_server: Any, coturn: CoturnConfig, tmp_path: Any) -> LiveServer:
    server = start_server(
        with_ui=True,
        enable_asr=True,
        enable_tts=True,
        enable_avatar=True,
        avatar_size=256,
        tts_engine="piper",
        turn_secret=SECRET,
        webrtc_turn_server=f"turn:127.0.0.1:{coturn.listening_port}",
    )
    video = portrait_video(tmp_path / "me.mp4", seconds=1.5, size=(480, 360))
    with server.client() as api:
        with video.open("rb") as f:
            made = api.post("/v1/avatars/upload", data={"avatar_id": "ada"}, files={"file": ("me.mp4", f, "video/mp4")})
        assert made.status_code in (201, 202), made.text
        _until(lambda: api.get("/v1/avatars/ada").json()["status"] == "ready", 60, "the avatar")
        new_tutor(api, "Ada", subject="Geography", avatar_id="ada")
    return server


def _called(server: LiveServer, launch: Any, tmp_path: Any, question: str, *scripts: str) -> Any:
    """A Student tab page whose fake microphone asks `question` once, on a connected call."""
    wav = tmp_path / "question.wav"
    # Chromium loops the file: the question once, then a long silence while the tutor answers.
    wav.write_bytes(wav_bytes(with_silence(say(question, rate=48_000), 1.5, 40.0)))
    browser = launch(
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    )
    page = browser.new_page()
    for script in (RECORD_PEERS, *scripts):
        page.add_init_script(script)
    open_ui(page, server)
    expect(page.locator("#tutor-header")).to_contain_text("Ada", timeout=10_000)
    page.locator("#live-call").get_by_role("button", name="Click to Access Webcam").click()
    page.locator("#live-call").get_by_text("Start call").click()
    _until(lambda: server.services.calls.summary()["connected"] == 1, 20, "the call to connect")
    return page


def test_a_student_talks_to_the_tutor_on_a_live_call(tmp_path, start_server, launch, coturn) -> None:
    server = _call_server(start_server, coturn, tmp_path)
    page = _called(server, launch, tmp_path, "What is the capital of France?")
    calls = server.services.calls
    chat = page.locator("#chat")
    expect(chat).to_contain_text("🎤 What is the capital of France?", timeout=30_000)
    expect(chat).to_contain_text("[Ada|0] What is the capital of France?", timeout=30_000)
    (peer,) = calls._peers.values()
    _until(lambda: peer.playout.speech_frames_shown > 25, 30, "the tutor to speak on the call")
    # The call's video plays the avatar (256 px), and both ends were relayed, nothing else.
    page.wait_for_function(
        "() => { const v = document.querySelector('#live-call video');"
        " return v && v.videoWidth === 256 && v.currentTime > 2; }",
        timeout=20_000,
    )
    pair = page.evaluate(SELECTED_PAIR)
    assert pair == {"policy": "relay", "local": "relay", "remote": "relay"}, pair
    assert set(peer.selected_pairs()) == {("relay", "relay")}
    # A question typed during the call is answered on the call: aloud, lip-synced, in the chat.
    spoken_before = peer.playout.speech_frames_shown
    page.locator("#question textarea").fill("Where is Paris?")
    page.locator("#send").click()
    expect(chat).to_contain_text("[Ada|1] Where is Paris?", timeout=30_000)
    _until(lambda: peer.playout.speech_frames_shown > spoken_before + 10, 30, "the typed answer spoken on the call")
    assert page.locator("#chat").get_by_text("Where is Paris?", exact=True).count() == 1  # the question's bubble
    # The chat's session is the call's: a reload shows the spoken turn.
    page.locator("#live-call").get_by_text("Hang up").click()
    _until(lambda: calls.summary()["peers"] == 0, 15, "the call to close")
    page.reload(wait_until="load")
    expect(page.locator("#chat")).to_contain_text("[Ada|0] What is the capital of France?", timeout=15_000)
    page.close()


def test_a_student_without_a_camera_calls_with_the_microphone_and_still_sees_the_tutor(
    tmp_path, start_server, launch, coturn
) -> None:
    server = _call_server(start_server, coturn, tmp_path)
    page = _called(server, launch, tmp_path, "What is the capital of Spain?", NO_CAMERA)
    expect(page.locator("#chat")).to_contain_text("[Ada|0] What is the capital of Spain?", timeout=40_000)
    sent = page.evaluate("() => window.__peers.at(-1).getSenders().filter(s => s.track).map(s => s.track.kind)")
    assert sent == ["audio"], sent  # the microphone alone
    page.wait_for_function(  # and the tutor's face all the same
        "() => { const v = document.querySelector('#live-call video');"
        " return v && v.videoWidth === 256 && v.currentTime > 1; }",
        timeout=20_000,
    )
    page.close()


def test_the_call_component_leaks_no_credentials_and_refuses_strangers(start_server, coturn) -> None:
    server = start_server(
        with_ui=True,
        enable_asr=True,
        enable_tts=True,
        tts_engine="piper",
        turn_secret=SECRET,
        webrtc_turn_server=f"turn:127.0.0.1:{coturn.listening_port}",
    )
    base = f"{server.url}{server.settings.ui_path}"
    config = httpx.get(f"{base}/config", timeout=10).text
    assert "credential" not in config and SECRET not in config and "turn:" not in config
    component = next(c for c in httpx.get(f"{base}/config").json()["components"] if c["type"] == "webrtc")
    for fn_name, data in (("turn", None), ("offer", {"sdp": "v=0", "type": "offer", "webrtc_id": "x"})):
        body = {"session_hash": "never-loaded", "component_id": component["id"], "fn_name": fn_name, "data": data}
        answer = httpx.post(f"{base}/gradio_api/component_server", json=body, timeout=10).json()
        assert "Pick a tutor first" in str(answer), answer
    assert server.services.calls.summary()["peers"] == 0
