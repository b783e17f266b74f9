"""The app with the instant scripted LLM, for benchmarks that measure the framework alone."""

from __future__ import annotations

import uvicorn

from app import logs
from app.server import build_services, create_app
from app.settings import Settings
from tests.scripted import ScriptedLLM
from tutors import llm

if __name__ == "__main__":
    llm.register("scripted", lambda _settings: ScriptedLLM())
    settings = Settings(llm_engine="scripted")
    logs.configure(settings.log_level)
    app = create_app(build_services(settings), with_ui=False)
    uvicorn.run(app, host="127.0.0.1", port=settings.management_api_port, log_level="warning", access_log=False)
