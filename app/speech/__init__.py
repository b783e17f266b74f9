"""Speech stages: voice activity and turn-taking, speech recognition, speech synthesis.

Each stage has a small engine interface (`vad.VAD`, `asr.ASR`, `tts.TTS`); `registry` picks the
engines from the settings. Heavy libraries are imported inside the engine modules' methods, so
the server imports on a machine that lacks them and reports the stage as failed instead.
"""
