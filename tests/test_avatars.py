"""Avatars through the REST API with real videos: preparation, its failures, the import folder,
and lip-synced video over the WebSocket."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
import websockets

from avatars.frames import AvatarFrames
from tests.kit.live import new_session, new_tutor, ws_url
from tests.kit.media import av_lag, portrait_video

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _upload(api: httpx.Client, avatar_id: str, path: Path, name: str | None = None) -> httpx.Response:
    with path.open("rb") as f:
        return api.post(
            "/v1/avatars/upload", data={"avatar_id": avatar_id}, files={"file": (name or path.name, f, "video/mp4")}
        )


def _settled(api: httpx.Client, avatar_id: str, timeout: float = 60) -> tuple[dict[str, Any], list[float]]:
    seen: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        avatar = api.get(f"/v1/avatars/{avatar_id}").json()
        seen.append(avatar["progress"])
        if avatar["status"] != "preparing":
            return avatar, seen
        time.sleep(0.1)
    raise AssertionError(f"still preparing after {timeout}s: {avatar}")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return portrait_video(tmp_path_factory.mktemp("videos") / "teacher.mp4", seconds=2.0, size=(480, 360))


def test_an_uploaded_video_becomes_a_ready_avatar(server: Any, api: httpx.Client, clip: Path) -> None:
    response = _upload(api, "ada-face", clip)
    assert response.status_code == 202 and response.json()["status"] == "preparing"
    avatar, seen = _settled(api, "ada-face")
    assert avatar["status"] == "ready", avatar
    assert avatar["progress"] == 1.0 and seen == sorted(seen)  # progress only moves forward
    assert avatar["fps"] == 25 and avatar["frames"] == 50 and avatar["size"] == 512
    assert avatar["engines"]["warp"] == "ready"
    folder = server.settings.avatar_folder / "ada-face"
    info = json.loads((folder / "avatar.json").read_text())
    assert len(list((folder / "frames").glob("*.jpg"))) == 50 == len(info["mouths"])
    with av.open(str(folder / "idle.mp4")) as loop:  # forward then backward, no repeated ends
        assert sum(1 for _ in loop.decode(video=0)) == 98
    assert [a["avatar_id"] for a in api.get("/v1/avatars").json()["avatars"]] == ["ada-face"]
    assert _upload(api, "ada-face", clip).status_code == 409
    assert api.delete("/v1/avatars/ada-face").status_code == 204
    assert api.get("/v1/avatars/ada-face").status_code == 404
    assert not folder.exists() and not list((server.settings.avatar_folder / "sources").iterdir())


def _make_4k(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 3840, 2160, "yuv420p"
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((2160, 3840, 3), np.uint8), format="rgb24")):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _blank(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for _ in range(40):
            frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 128, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda d, clip: (d / "notes.mp4").write_bytes(b"these are lecture notes, not a video") and d / "notes.mp4",
            "not a video file",
        ),
        (
            lambda d, clip: (
                (d / "cut.mp4").write_bytes(clip.read_bytes()[: clip.stat().st_size // 3]) and d / "cut.mp4"
            ),
            "corrupt or incomplete",
        ),
        (lambda d, clip: _blank(d / "blank.mp4"), "no face found"),
        (lambda d, clip: portrait_video(d / "two.mp4", seconds=1.5, size=(640, 240), faces=2), "several faces"),
        (lambda d, clip: _make_4k(d / "uhd.mp4"), "3840×2160"),
        (lambda d, clip: portrait_video(d / "long.mp4", seconds=4, size=(320, 240)), "long; the limit is 0:00:03"),
    ],
)
def test_bad_videos_fail_with_a_reason_and_leave_nothing_behind(
    start_server: Any, tmp_path: Path, clip: Path, make: Any, reason: str
) -> None:
    server = start_server(avatar_max_video_seconds=3)
    video = make(tmp_path, clip)
    with server.client() as api:
        assert _upload(api, "bad", video).status_code == 202
        avatar, _ = _settled(api, "bad")
    assert avatar["status"] == "failed" and reason in avatar["error"], avatar
    leftovers = [p.name for p in server.settings.avatar_folder.iterdir() if p.name != "sources"]
    assert leftovers == []


def test_uploads_are_checked_before_anything_is_stored(start_server: Any, tmp_path: Path, clip: Path) -> None:
    server = start_server(avatar_max_upload_bytes=50_000)
    with server.client() as api:
        assert _upload(api, "big", clip).status_code == 413
        small = tmp_path / "small.mp4"
        small.write_bytes(clip.read_bytes()[:1000])
        assert "made from a video" in _upload(api, "doc", small, name="slides.pdf").json()["detail"]
        assert _upload(api, "../escape", small).status_code == 422
        assert api.post("/v1/avatars/upload", data={"avatar_id": "x"}).status_code == 422
        assert api.get("/v1/avatars").json()["count"] == 0


def test_import_takes_only_files_inside_the_import_folder(server: Any, api: httpx.Client, tmp_path: Path) -> None:
    imports = server.settings.avatar_imports
    portrait_video(imports / "lesson.mp4", seconds=1.5, size=(320, 240))
    outside = portrait_video(tmp_path / "private.mp4", seconds=1.5, size=(320, 240))
    (imports / "link.mp4").symlink_to(outside)
    for path in ("../private.mp4", str(outside), "link.mp4", "/etc/passwd"):
        response = api.post("/v1/avatars", json={"avatar_id": "sneaky", "video_path": path})
        assert response.status_code == 422 and "import folder" in response.json()["detail"], (path, response.text)
    assert api.post("/v1/avatars", json={"avatar_id": "x", "video_path": "missing.mp4"}).status_code == 404
    assert api.post("/v1/avatars", json={"avatar_id": "lesson", "video_path": "lesson.mp4"}).status_code == 202
    assert _settled(api, "lesson")[0]["status"] == "ready"


async def test_students_see_the_tutor_speak_with_lip_synced_video(start_server: Any, clip: Path) -> None:
    server = start_server(enable_tts=True, tts_engine="piper", enable_avatar=True)
    with server.client() as api:
        assert _upload(api, "face", clip).status_code == 202
        ready = (await asyncio.to_thread(_settled, api, "face"))[0]
        assert ready["status"] == "ready"
        # No MuseTalk weights here: its data is not made, and the avatar says why.
        assert ready["engines"]["musetalk"].startswith("not prepared: MuseTalk needs these files")
        session = new_session(api, new_tutor(api, "Ada", avatar_id="face")["id"])
    async with websockets.connect(ws_url(session)) as ws:
        await ws.send(json.dumps({"type": "text", "content": "Open wide. Say ah, then be quiet."}))
        messages: list[dict[str, Any]] = []
        while not (messages and messages[-1]["type"] == "video" and messages[-1]["final"]):
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
    audio = [m for m in messages if m["type"] == "audio"]
    video = [m for m in messages if m["type"] == "video"]
    assert [m["seq"] for m in video] == [m["seq"] for m in audio] and video[-1]["final"]
    first = base64.b64decode(video[0]["content"])
    with av.open(io.BytesIO(first)) as clip_in:
        assert (
            clip_in.streams.video[0].codec_context.name == "h264"
            and clip_in.streams.audio[0].codec_context.name == "aac"
        )
        pictures = [f.to_ndarray(format="rgb24") for f in clip_in.decode(video=0)]
    seconds = len(base64.b64decode(audio[0]["content"])) / 2 / audio[0]["sample_rate"]  # ~ WAV payload
    assert abs(len(pictures) - seconds * 25) <= 2 and pictures[0].shape == (512, 512, 3)
    # Against the idle loop at the same positions: the mouth moves, the eyes stay as they were.
    idle = AvatarFrames("face", server.settings.avatar_folder / "face")
    mouth_change, eye_change = [], []
    for k, picture in enumerate(pictures):
        still, (cx, cy, mw, mh) = idle.frame(k)
        diff = np.abs(picture.astype(np.float32) - still.astype(np.float32))
        mouth_change.append(diff[int(cy - mh) : int(cy + 2 * mh), int(cx - mw / 2) : int(cx + mw / 2)].mean())
        eye_change.append(diff[int(cy - 3.5 * mh) : int(cy - 2 * mh), int(cx - mw) : int(cx + mw)].mean())
    assert max(mouth_change) > 12 and max(eye_change) < 4, (max(mouth_change), max(eye_change))


def test_the_mouth_follows_the_speech_in_sync(tmp_path: Path, clip: Path) -> None:
    """Lips shut on p/b/m and in silence; the opening measured from the pixels lines up with
    the audio envelope (0 ± 1 frame), and the same measure rejects time-reversed audio."""
    from app.speech.tts import PiperTTS
    from avatars.lipsync.warp import WarpLipSync, mouth_track
    from avatars.prepare import Limits, prepare

    prepare(clip, tmp_path / "face", Limits(), lambda *_: None)
    avatar = AvatarFrames("face", tmp_path / "face")
    piper = PiperTTS()
    piper.warmup()
    speech = piper._speak("Maybe Bob bought a map. Open the window and the door, please.")
    opening, _ = mouth_track(speech, 25)
    for p in speech.phonemes or ():
        frames = range(int(p.start * 25 + 1), int((p.start + p.duration) * 25))
        if p.symbol in ("m", "b", "p"):
            assert all(opening[i] == 0 for i in frames if i < len(opening)), p
    assert opening[0] < 0.1 and opening[-1] < 0.2  # silence before and after the words
    frames = list(WarpLipSync().render(avatar, speech, 0))
    mouth = []
    for k, frame in enumerate(frames):
        still, (cx, cy, mw, mh) = avatar.frame(k)
        box = (slice(int(cy - mh), int(cy + 2 * mh)), slice(int(cx - mw / 2), int(cx + mw / 2)))
        mouth.append(np.abs(frame.image[box].astype(np.float32) - still[box].astype(np.float32)).mean())
    envelope = np.array([np.sqrt(np.mean(f.audio.samples**2)) for f in frames])
    lag, corr = av_lag(np.array(mouth), envelope)
    assert abs(lag) <= 1 and corr > 0.5, (lag, corr)
    control_lag, control_corr = av_lag(np.array(mouth), envelope[::-1])
    assert not (abs(control_lag) <= 1 and control_corr > 0.5), (control_lag, control_corr)
