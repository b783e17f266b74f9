"""The app with the instant scripted LLM, for benchmarks that measure the framework alone."""

from __future__ import annotations

import uvicorn

from app.core import logs
from app.core.settings import Settings
from app.server import create_app
from app.services import build_services
from tests.kit.scripted import ScriptedLLM
from tutors.llm import LLM_ENGINES

if __name__ == "__main__":
    LLM_ENGINES.register("scripted", lambda _settings: ScriptedLLM())
    settings = Settings(llm_engine="scripted")
    logs.configure(settings.log_level)
    app = create_app(build_services(settings), with_ui=False)
    uvicorn.run(app, host="127.0.0.1", port=settings.management_api_port, log_level="warning", access_log=False)
