"""The MuseTalk engine's code, end to end, with randomly initialised scaled-down networks of
the real kinds (diffusers UNet and VAE, a Whisper encoder): no weights exist here, and no GPU.
What a random network draws is noise; what is checked is the plumbing: latents per avatar
frame, audio tokens per video frame, batches, and the paste-back into the idle loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.core.errors import EngineUnavailable
from avatars.frames import AvatarFrames
from avatars.lipsync import LipSyncFallback
from avatars.lipsync.musetalk import REQUIRED, MuseTalkLipSync
from avatars.lipsync.warp import WarpLipSync
from avatars.prepare import Limits, prepare
from tests.kit.media import portrait_video


def _tiny_engine() -> MuseTalkLipSync:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=8,  # masked + reference latents, as MuseTalk's
        out_channels=4,
        block_out_channels=(32, 64, 64, 64),
        layers_per_block=1,
        cross_attention_dim=384,  # Whisper-tiny's width
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 64, 64),
        latent_channels=4,
        sample_size=256,
    )
    whisper = WhisperConfig(
        d_model=384,
        encoder_layers=4,  # + the embeddings: 5 hidden states, as Whisper-tiny's
        decoder_layers=1,
        encoder_attention_heads=6,
        decoder_attention_heads=6,
        encoder_ffn_dim=768,
        decoder_ffn_dim=768,
    )
    encoder = WhisperModel(whisper).encoder.eval()
    engine = MuseTalkLipSync.from_modules(unet.eval(), vae.eval(), encoder, WhisperFeatureExtractor())
    engine.batch_size = 8
    return engine


def test_musetalk_draws_the_lower_face_and_leaves_the_rest(tmp_path: Path) -> None:
    from app.speech.tts import PiperTTS

    video = portrait_video(tmp_path / "me.mp4", seconds=1.2, size=(320, 240))
    prepare(video, tmp_path / "face", Limits(size=256, loop_seconds=1.2), lambda *_: None)
    avatar = AvatarFrames("face", tmp_path / "face")
    piper = PiperTTS()
    piper.warmup()
    speech = piper._speak("Hello there.")
    engine = _tiny_engine()
    engine.warmup()  # already loaded: no files needed
    assert engine.prepare_avatar(avatar) == {"musetalk": "ready"}
    frames = list(engine.render(avatar, speech, 3))
    assert len(frames) == int(np.ceil(speech.pcm.seconds * 25))
    assert [f.index for f in frames] == list(range(3, 3 + len(frames)))
    idle, _ = avatar.frame(3)
    changed = np.abs(frames[0].image.astype(int) - idle.astype(int)).max(axis=2) > 8
    x, y, w, h = avatar.faces[3]
    rows, cols = np.nonzero(changed)
    assert rows.size > 0, "nothing was drawn"
    assert rows.min() >= y + 0.3 * h and cols.min() >= x - 0.1 * w and cols.max() <= x + 1.1 * w  # lower face only
    assert not changed[: int(y)].any()  # forehead and above untouched


def test_missing_weights_are_named_and_auto_falls_back_visibly(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable) as caught:
        MuseTalkLipSync(tmp_path).warmup()
    assert all(name in caught.value.message for name in REQUIRED)
    for name in REQUIRED[:3]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert MuseTalkLipSync(tmp_path).missing() == list(REQUIRED[3:])
    chosen = LipSyncFallback(MuseTalkLipSync(tmp_path), WarpLipSync())
    chosen.warmup()
    assert chosen.fallback_active and chosen.name == "warp"
    assert "MuseTalk needs these files" in chosen.status_detail and "unet.pth" not in chosen.status_detail
    assert chosen.prepare_avatar(None)["musetalk"].startswith("not prepared: MuseTalk needs")  # type: ignore[arg-type]


def test_the_gpu_benchmark_runs_scaled_down_where_there_is_no_gpu(tmp_path: Path) -> None:
    """bench_gpu is run by hand on a lent GPU box; here it runs its whole path (the engine on
    a prepared avatar, sessions at once, a converted random Whisper) at the tiny scale, so it
    cannot rot between GPU boxes."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    args = ["--scale", "tiny", "--batches", "2", "4", "--most-sessions", "1", "--answer", "Paris.", "--name", "gpu-ci"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_gpu", *args],
        cwd=root,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    written = root / "bench" / "results" / "gpu-ci.json"
    result = json.loads(written.read_text())
    written.unlink()
    assert result["scale"] == "tiny" and len(result["rows"]) == 5, result
    assert "frames/s" in result["rows"][0]["result"] and "large" not in result["rows"][3]["what"]
    assert result["rows"][-1]["what"].startswith("end of speech")
