"""Audio in and out: decode what clients send into 16 kHz mono floats, encode what we say.

Clients send WAV, raw 16-bit PCM with a `sample_rate`, or (browsers' MediaRecorder) a
compressed container such as WebM/Ogg/MP3; everything is checked and converted here, once,
so the engines only ever see 16 kHz mono float32 in [-1, 1].
"""

from __future__ import annotations

import base64
import binascii
import io
import wave

import numpy as np

from app.core.errors import InvalidAudio
from app.core.media import ASR_RATE, PCM, resample

MIN_RATE, MAX_RATE = 8_000, 96_000


def b64decode(content: object) -> bytes:
    if not isinstance(content, str) or not content:
        raise InvalidAudio("`content` must be base64-encoded audio (WAV, or 16-bit PCM with a `sample_rate`)")
    if content.startswith("data:"):  # a data URL, as browsers produce
        content = content.partition(",")[2]
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidAudio("`content` is not valid base64") from None


def decode(data: bytes, *, sample_rate: int | None = None, max_seconds: float) -> PCM:
    """Any supported input → 16 kHz mono. `sample_rate` is required for raw PCM; for a file
    it must agree with the file's own header, if given."""
    if not data:
        raise InvalidAudio("the audio is empty")
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        pcm = _decode_wav(data)
    elif data.startswith(_CONTAINER_MAGIC) or data[4:8] == b"ftyp":
        pcm = _decode_container(data, max_seconds)
    elif sample_rate is None and data.startswith(_MP3_SYNC):
        pcm = _decode_container(data, max_seconds)
    elif sample_rate is None:
        raise InvalidAudio(
            "this is not audio this server reads: send WAV, WebM/Ogg/MP3, or raw 16-bit PCM with a `sample_rate`"
        )
    else:
        _check_rate(sample_rate)
        if len(data) % 2:
            raise InvalidAudio("raw PCM must be 16-bit samples: the byte count is odd")
        pcm = PCM.from_int16(data, sample_rate)
        sample_rate = None  # the rate is the data's own
    if sample_rate is not None and sample_rate != pcm.sample_rate:
        raise InvalidAudio(f"`sample_rate` {sample_rate} does not match the audio's own rate {pcm.sample_rate}")
    return for_recognition(pcm, max_seconds)


def for_recognition(pcm: PCM, max_seconds: float) -> PCM:
    """Decoded audio, from any source, checked and brought to 16 kHz."""
    if pcm.seconds > max_seconds:
        raise InvalidAudio(f"the recording is {pcm.seconds:.0f} s long; the limit is {max_seconds:.0f} s per question")
    if not np.isfinite(pcm.samples).all():
        raise InvalidAudio("the audio contains invalid samples (NaN or infinity)")
    return resample(pcm, ASR_RATE)


def _check_rate(rate: int) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InvalidAudio(f"sample rate {rate} Hz is outside {MIN_RATE}–{MAX_RATE} Hz")


def _decode_wav(data: bytes) -> PCM:
    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises its own and RuntimeError for corrupt files
        raise InvalidAudio(f"the WAV file cannot be read: {exc}") from None
    _check_rate(rate)
    return PCM(samples.mean(axis=1).astype(np.float32), rate)


# Unmistakable file signatures (EBML/WebM, Ogg, ID3-tagged MP3, FLAC); a bare MP3 frame sync
# could also be the first PCM samples, so it counts only when no `sample_rate` says "raw".
_CONTAINER_MAGIC = (b"\x1aE\xdf\xa3", b"OggS", b"ID3", b"fLaC")
_MP3_SYNC = (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")


def _decode_container(data: bytes, max_seconds: float) -> PCM:
    """WebM/Ogg/MP3/MP4/FLAC through PyAV, stopping as soon as the recording is too long."""
    import av

    chunks: list[np.ndarray] = []
    resampler = av.AudioResampler(format="flt", layout="mono", rate=ASR_RATE)
    limit = (max_seconds + 1) * ASR_RATE
    got = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise InvalidAudio("the file has no audio track")
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    got += len(chunk)
                if got > limit:
                    break
    except InvalidAudio:
        raise
    except Exception as exc:  # PyAV raises many error types for a corrupt stream
        raise InvalidAudio(f"the audio file cannot be decoded: {exc}") from None
    if not chunks:
        raise InvalidAudio("the audio file holds no samples")
    return PCM(np.concatenate(chunks).astype(np.float32), ASR_RATE)


def wav_bytes(pcm: PCM) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(pcm.sample_rate)
        out.writeframes(pcm.to_int16().tobytes())
    return buffer.getvalue()
