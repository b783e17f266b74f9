"""The GPU box's engines, measured: MuseTalk v1.5-size lip-sync, Whisper large-v3-size
recognition, and end of speech → first lip-synced frame with them.

    python -m bench.bench_gpu                 # CUDA: full sizes (under 8 minutes, unattended)
    python -m bench.bench_gpu --scale tiny    # anywhere: scaled-down networks (CI runs this)

The networks are the real kinds at the real sizes with random weights (no download: the same
sizes run at the same speed; what they draw or write is noise). MuseTalk runs through the
production engine (`avatars.lipsync.musetalk`, fp16 on CUDA) on a prepared avatar and Piper's
speech; Whisper large-v3 is built from its configuration, converted to CTranslate2 and run by
faster-whisper, its output capped at a question's length (a random model never stops); the
tiny scale runs the same build-and-convert path with Whisper-tiny's sizes.
Rows: frames/s of one speaking session per batch size, how many sessions hold 25 fps
together, the recogniser's time for a 3 s question, and the sum of the stages from the end of
speech to the first frame (the LLM's first token is Ollama's, on its own server: not here).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import report

# MuseTalk v1.5's published networks: an SD-1.5-shaped UNet on 8 latent channels (masked and
# reference face) attending to Whisper-tiny's 384-wide audio tokens; sd-vae-ft-mse.
FULL = {
    "unet": {
        "sample_size": 32,
        "in_channels": 8,
        "out_channels": 4,
        "block_out_channels": (320, 640, 1280, 1280),
        "layers_per_block": 2,
        "cross_attention_dim": 384,
        "attention_head_dim": 8,
    },
    "vae": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4},
    "whisper_ffn": 1536,
}
TINY = {
    "unet": {
        "sample_size": 32,
        "in_channels": 8,
        "out_channels": 4,
        "block_out_channels": (32, 64, 64, 64),
        "layers_per_block": 1,
        "cross_attention_dim": 384,
        "attention_head_dim": 8,
    },
    "vae": {"block_out_channels": (32, 32, 64, 64), "layers_per_block": 1, "latent_channels": 4},
    "whisper_ffn": 768,
}
FPS = 25


def lipsync_engine(scale: str, device: str) -> Any:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    from avatars.lipsync.musetalk import MuseTalkLipSync

    sizes = FULL if scale == "full" else TINY
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**sizes["unet"])
    blocks = len(sizes["vae"]["block_out_channels"])
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        sample_size=256,
        **sizes["vae"],
    )
    whisper = WhisperConfig(
        d_model=384,
        encoder_layers=4,  # Whisper-tiny's encoder: 4 layers (+ embeddings = 5 hidden states)
        decoder_layers=1,
        encoder_attention_heads=6,
        decoder_attention_heads=6,
        encoder_ffn_dim=sizes["whisper_ffn"],
        decoder_ffn_dim=sizes["whisper_ffn"],
    )
    encoder = WhisperModel(whisper).encoder
    dtype = torch.float16 if device == "cuda" else torch.float32
    for module in (unet, vae, encoder):
        module.to(device, dtype=dtype).eval()
    return MuseTalkLipSync.from_modules(unet, vae, encoder, WhisperFeatureExtractor(), device=device)


def prepared_avatar(folder: Path) -> Any:
    from avatars.frames import AvatarFrames
    from avatars.prepare import Limits, prepare
    from tests.kit.media import portrait_video

    video = portrait_video(folder / "teacher.mp4", seconds=2.0, size=(640, 480))
    prepare(video, folder / "face", Limits(size=512, loop_seconds=2.0), lambda *_: None)
    return AvatarFrames("face", folder / "face")


def speech(text: str) -> Any:
    from app.speech.tts import PiperTTS

    piper = PiperTTS()
    piper.warmup()
    return piper._speak(text)


def render(engine: Any, avatar: Any, said: Any) -> tuple[int, float, float]:
    """Frames drawn, seconds to the first, seconds for all."""
    started = time.perf_counter()
    first, frames = 0.0, 0
    for _ in engine.render(avatar, said, 0):
        frames += 1
        first = first or time.perf_counter() - started
    return frames, first, time.perf_counter() - started


def sessions_at_full_rate(engine: Any, avatar: Any, said: Any, most: int) -> tuple[int, float]:
    """How many sessions speaking at once each get ≥ 25 frames a second (the engine is shared,
    as in the server); and the slowest session's rate at the first count that falls short."""

    def one(rates: list[float]) -> None:
        frames, _, took = render(engine, avatar, said)
        rates.append(frames / took)

    for count in range(1, most + 1):
        rates: list[float] = []
        threads = [threading.Thread(target=one, args=(rates,)) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if min(rates) < FPS:
            return count - 1, round(min(rates), 1)
    return most, float("nan")


# Whisper's sizes: large-v3 (128 mel bins) on the GPU box; tiny's to keep the same path alive
# in CI. The vocabulary is the packaged base model's (one token short of large-v3's: the same
# cost), so nothing is downloaded.
WHISPER = {
    "full": {"d_model": 1280, "layers": 32, "heads": 20, "ffn": 5120, "mels": 128, "label": "large-v3 size"},
    "tiny": {"d_model": 384, "layers": 4, "heads": 6, "ffn": 1536, "mels": 80, "label": "tiny size"},
}


def whisper_model(scale: str, device: str, folder: Path) -> tuple[Any, str]:
    """A random Whisper of the scale's size, converted to CTranslate2 for faster-whisper."""
    import json
    import shutil

    import ctranslate2
    import transformers
    from faster_whisper import WhisperModel

    from app.speech.asr import multilingual_model_dir

    size = WHISPER[scale]
    config = transformers.WhisperConfig(
        vocab_size=51865,
        num_mel_bins=size["mels"],
        d_model=size["d_model"],
        encoder_layers=size["layers"],
        decoder_layers=size["layers"],
        encoder_attention_heads=size["heads"],
        decoder_attention_heads=size["heads"],
        encoder_ffn_dim=size["ffn"],
        decoder_ffn_dim=size["ffn"],
    )
    source, target = folder / "whisper-hf", folder / "whisper-ct2"
    transformers.WhisperForConditionalGeneration(config).half().save_pretrained(source)
    vocabulary = Path(multilingual_model_dir()) / "tokenizer.json"
    transformers.WhisperTokenizerFast(tokenizer_file=str(vocabulary)).save_pretrained(source)
    ctranslate2.converters.TransformersConverter(str(source), load_as_float16=True).convert(
        str(target), quantization="float16"
    )
    shutil.copy(vocabulary, target / "tokenizer.json")
    (target / "preprocessor_config.json").write_text(json.dumps({"feature_size": size["mels"]}))
    compute = "float16" if device == "cuda" else "int8"
    return WhisperModel(str(target), device=device, compute_type=compute), f"{size['label']} (random)"


def recognise(model: Any, said: Any, runs: int) -> float:
    from app.core.media import ASR_RATE, resample

    samples = resample(said.pcm, ASR_RATE).samples
    took = []
    for _ in range(runs + 1):  # the first is the warm-up
        started = time.perf_counter()
        segments, _ = model.transcribe(samples, language="en", beam_size=5, max_new_tokens=24)
        list(segments)
        took.append(time.perf_counter() - started)
    return statistics.median(took[1:])


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scale", choices=["full", "tiny"], default=None)
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--most-sessions", type=int, default=12)
    parser.add_argument("--answer", default="Paris is the capital of France, and it sits on the river Seine.")
    parser.add_argument("--name", default="gpu")
    args = parser.parse_args()
    scale = args.scale or ("full" if args.device == "cuda" else "tiny")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as folder_name:
        folder = Path(folder_name)
        avatar = prepared_avatar(folder)
        answer = speech(args.answer)
        question = speech("What is the capital of France?")
        engine = lipsync_engine(scale, args.device)
        engine.prepare_avatar(avatar)
        render(engine, avatar, answer)  # warm: kernels chosen, latents on the device
        firsts = {}
        for batch in args.batches:
            engine.batch_size = batch
            frames, first, took = render(engine, avatar, answer)
            firsts[batch] = first
            rows.append(
                {
                    "what": f"MuseTalk, one session, batch {batch}",
                    "result": f"{frames / took:.1f} frames/s, first frame {first * 1000:.0f} ms",
                }
            )
        best = min(firsts, key=firsts.__getitem__)  # the batch that shows a face soonest
        engine.batch_size = max(args.batches)
        held, short = sessions_at_full_rate(engine, avatar, answer, args.most_sessions)
        rows.append(
            {
                "what": f"MuseTalk, sessions speaking at once at ≥ {FPS} fps (batch {engine.batch_size})",
                "result": f"{held}" + ("" if short != short else f" (one more: slowest {short} fps)"),
            }
        )
        asr, label = whisper_model(scale, args.device, folder)
        heard = recognise(asr, question, runs=3)
        rows.append({"what": f"Whisper {label}, a {question.pcm.seconds:.1f} s question", "result": f"{heard:.2f} s"})
        piper_started = time.perf_counter()
        speech("Paris is the capital of France.")
        voice = time.perf_counter() - piper_started
        total = heard + voice + firsts[best]
        rows.append(
            {
                "what": "end of speech → first lip-synced frame (recognise + first sentence's voice + first "
                f"batch {best}; plus the LLM's first token)",
                "result": f"{total:.2f} s ({heard:.2f} + {voice:.2f} + {firsts[best]:.2f})",
            }
        )
    report(args.name, rows, {"device": args.device, "scale": scale, "gpu": _gpu_name(args.device)})


def _gpu_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device == "cuda" else "none"


if __name__ == "__main__":
    main()
