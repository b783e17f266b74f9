"""MuseTalk v1.5 (TMElyralab), the production lip-sync engine on a CUDA GPU.

Written against MuseTalk's published architecture: a VAE (sd-vae-ft-mse) encodes the face
crop (256×256) twice — with its lower half blanked, and whole as the reference — into 8
latent channels; Whisper-tiny's encoder turns the speech into per-frame audio tokens (for
each 40 ms frame, 10 encoder steps × 5 hidden layers = 50 tokens of 384, plus a sinusoidal
position code); the UNet (one step, t = 0) predicts the lower face's latents from both; the
VAE decodes them and the new lower face is blended back into the avatar's frame.

The weights are the operator's download (`MUSETALK_MODELS_DIR`, see REQUIRED); with any file
missing, or without CUDA, the engine refuses to start and says exactly what it lacks. The
VAE latents of an avatar's frames are computed once and kept beside the avatar
(`musetalk_latents.pt`). Tests run this code end to end with randomly initialised,
scaled-down networks of the same kinds (`from_modules`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from app.core.engines import PreparedAvatar
from app.core.errors import EngineUnavailable
from app.core.media import ASR_RATE, Speech, VideoFrame, audio_slices, resample

REQUIRED = (
    "musetalkV15/musetalk.json",
    "musetalkV15/unet.pth",
    "sd-vae/config.json",
    "sd-vae/diffusion_pytorch_model.bin",
    "whisper/config.json",
    "whisper/pytorch_model.bin",
    "whisper/preprocessor_config.json",
)
FACE = 256  # MuseTalk's face crop
WINDOW = 10  # Whisper encoder steps (50 Hz) per video frame's audio context: 2 frames either side


def _sinusoid(length: int, dim: int) -> np.ndarray:
    position = np.arange(length)[:, None]
    scale = np.exp(np.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = np.zeros((length, dim), dtype=np.float32)
    table[:, 0::2], table[:, 1::2] = np.sin(position * scale), np.cos(position * scale)
    return table


class MuseTalkLipSync:
    name = "musetalk"

    def __init__(self, models_dir: Path | None, *, device: str = "cuda", batch_size: int = 16) -> None:
        self.models_dir = models_dir
        self.device = device
        self.batch_size = batch_size
        self._modules: tuple[Any, Any, Any, Any] | None = None
        self._latents: dict[str, Any] = {}
        self._lock = threading.Lock()  # one batch on the GPU at a time per engine

    @property
    def description(self) -> str:
        return f"MuseTalk v1.5 ({self.device})"

    @classmethod
    def from_modules(cls, unet: Any, vae: Any, encoder: Any, features: Any, *, device: str = "cpu") -> MuseTalkLipSync:
        engine = cls(None, device=device)
        engine._modules = (unet, vae, encoder, features)
        return engine

    def missing(self) -> list[str]:
        if self.models_dir is None:
            return list(REQUIRED)
        return [name for name in REQUIRED if not (self.models_dir / name).is_file()]

    def warmup(self) -> None:
        if self._modules is not None:
            return
        missing = self.missing()
        if missing:
            where = self.models_dir or "MUSETALK_MODELS_DIR (not set)"
            raise EngineUnavailable(f"MuseTalk needs these files under {where}: {', '.join(missing)}")
        try:
            import diffusers  # noqa: F401
            import torch
        except ImportError as exc:
            raise EngineUnavailable(f"MuseTalk needs {exc.name}: pip install diffusers torch") from None
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineUnavailable("MuseTalk needs a CUDA GPU, and this machine has none")
        self._modules = self._load()

    def _load(self) -> tuple[Any, Any, Any, Any]:
        import json

        import torch
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import WhisperFeatureExtractor, WhisperModel

        assert self.models_dir is not None
        root = self.models_dir
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        unet = UNet2DConditionModel(**json.loads((root / "musetalkV15/musetalk.json").read_text()))
        unet.load_state_dict(torch.load(root / "musetalkV15/unet.pth", map_location="cpu", weights_only=True))
        vae = AutoencoderKL.from_pretrained(root / "sd-vae")
        encoder = WhisperModel.from_pretrained(root / "whisper").encoder
        features = WhisperFeatureExtractor.from_pretrained(root / "whisper")
        for module in (unet, vae, encoder):
            module.to(self.device, dtype=dtype).eval()
        return unet, vae, encoder, features

    # -- the avatar's side: latents of every frame, computed once -----------------------------
    def _face_box(self, avatar: PreparedAvatar, i: int) -> tuple[int, int, int, int]:
        """The face box of frame i, square, a little lower (MuseTalk wants the chin in)."""
        x, y, w, h = avatar.faces[i]
        side = int(max(w, h) * 1.1)
        cx, cy = x + w / 2, y + h / 2 + 0.08 * h
        left = int(np.clip(cx - side / 2, 0, avatar.size - side))
        top = int(np.clip(cy - side / 2, 0, avatar.size - side))
        return left, top, side, side

    def _to_tensor(self, images: list[np.ndarray]) -> Any:
        import torch

        unet, vae, _, _ = self._modules  # type: ignore[misc]
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
        return batch.to(self.device, dtype=next(vae.parameters()).dtype)

    def prepare_avatar(self, avatar: PreparedAvatar) -> dict[str, str]:
        """At avatar preparation: MuseTalk's own data (the frames' latents), if it is loaded."""
        if self._modules is None:
            return {"musetalk": "not prepared: MuseTalk is not loaded"}
        with self._lock:
            self._avatar_latents(avatar)
        return {"musetalk": "ready"}

    def _avatar_latents(self, avatar: PreparedAvatar) -> Any:
        import cv2
        import torch

        if avatar.id in self._latents:
            return self._latents[avatar.id]
        cache = avatar.folder / "musetalk_latents.pt"
        if cache.is_file():
            latents = torch.load(cache, map_location=self.device, weights_only=True)
        else:
            _, vae, _, _ = self._modules  # type: ignore[misc]
            scale = vae.config.scaling_factor
            parts = []
            for start in range(0, avatar.count, self.batch_size):
                faces = []
                for i in range(start, min(avatar.count, start + self.batch_size)):
                    left, top, side, _ = self._face_box(avatar, i)
                    image = avatar.frame(i)[0][top : top + side, left : left + side]
                    faces.append(cv2.resize(image, (FACE, FACE), interpolation=cv2.INTER_AREA))
                whole = self._to_tensor(faces)
                masked = whole.clone()
                masked[:, :, FACE // 2 :, :] = 0  # the lower half is what the model draws
                with torch.no_grad():
                    m = vae.encode(masked).latent_dist.mode() * scale
                    r = vae.encode(whole).latent_dist.mode() * scale
                parts.append(torch.cat([m, r], dim=1))
            latents = torch.cat(parts)
            if self.models_dir is not None:  # real weights: worth keeping beside the avatar
                torch.save(latents, cache)
        self._latents[avatar.id] = latents
        return latents

    # -- the speech's side: audio tokens per video frame --------------------------------------
    def _audio_tokens(self, speech: Speech, frames: int, fps: int) -> Any:
        import torch

        _, _, encoder, features = self._modules  # type: ignore[misc]
        samples = resample(speech.pcm, ASR_RATE).samples
        steps_per_frame = 50 / fps  # the encoder emits 50 steps a second
        layers = []
        for start in range(0, max(1, len(samples)), 30 * ASR_RATE):  # Whisper hears 30 s at a time
            chunk = samples[start : start + 30 * ASR_RATE]
            mel = features(chunk, sampling_rate=ASR_RATE, return_tensors="pt").input_features
            with torch.no_grad():
                out = encoder(mel.to(self.device, dtype=next(encoder.parameters()).dtype), output_hidden_states=True)
            steps = math.ceil(len(chunk) / ASR_RATE * 50)
            layers.append(torch.stack(out.hidden_states, dim=2)[0, :steps])  # steps × layers × 384
        hidden = torch.cat(layers)
        windows = []
        for i in range(frames):
            centre = int(round(i * steps_per_frame))
            index = torch.arange(centre - WINDOW // 2 + 1, centre + WINDOW // 2 + 1).clamp(0, len(hidden) - 1)
            windows.append(hidden[index].reshape(-1, hidden.shape[-1]))  # (WINDOW × layers) × 384
        tokens = torch.stack(windows)
        position = torch.from_numpy(_sinusoid(tokens.shape[1], tokens.shape[2])).to(tokens.device, tokens.dtype)
        return tokens + position

    # -- drawing -------------------------------------------------------------------------------
    def render(self, avatar: PreparedAvatar, speech: Speech, start: int) -> Iterator[VideoFrame]:
        import cv2
        import torch

        if self._modules is None:
            raise EngineUnavailable("MuseTalk is not loaded")
        unet, vae, _, _ = self._modules
        slices = audio_slices(speech.pcm, avatar.fps)
        with self._lock:
            latents = self._avatar_latents(avatar)
            tokens = self._audio_tokens(speech, len(slices), avatar.fps)
        loop = [avatar.index(start + n) for n in range(len(slices))]
        timestep = torch.zeros(1, device=self.device, dtype=torch.long)
        blend = _lower_face_mask()
        for first in range(0, len(slices), self.batch_size):
            span = range(first, min(len(slices), first + self.batch_size))
            with self._lock, torch.no_grad():
                predicted = unet(
                    latents[[loop[n] for n in span]], timestep, encoder_hidden_states=tokens[list(span)]
                ).sample
                faces = vae.decode(predicted / vae.config.scaling_factor).sample
            faces = ((faces.float().clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).to("cpu", torch.uint8).numpy()
            for n, face in zip(span, faces, strict=True):
                image = avatar.frame(start + n)[0].copy()
                left, top, side, _ = self._face_box(avatar, loop[n])
                drawn = cv2.resize(face, (side, side), interpolation=cv2.INTER_LINEAR).astype(np.float32)
                alpha = cv2.resize(blend, (side, side))[..., None]
                region = image[top : top + side, left : left + side].astype(np.float32)
                image[top : top + side, left : left + side] = (region * (1 - alpha) + drawn * alpha).astype(np.uint8)
                yield VideoFrame(image, slices[n], start + n)


def _lower_face_mask() -> np.ndarray:
    """Where the drawn face replaces the original: the lower half, feathered at its edges
    (MuseTalk's own recipe parses the face; an even blend keeps the cheeks' real texture)."""
    import cv2

    mask = np.zeros((FACE, FACE), dtype=np.float32)
    cv2.ellipse(mask, (FACE // 2, int(FACE * 0.68)), (int(FACE * 0.36), int(FACE * 0.27)), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), FACE * 0.04)
