"""The app factory: ``uvicorn api.main:create_app --factory``.

Settings and the engine are built here and handed to the routes through ``app.state``; tests pass their own.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from api import bodylimit, docs, errors, logfilter, observability, openapi, ratelimit, security
from api.deps import Gateway
from api.routes import ask, health, models, openai_v1, summarize
from medgpt import __version__
from medgpt.admission import Admission
from medgpt.engines import Engine, EngineError, create_engine
from medgpt.settings import Settings

log = logging.getLogger("medgpt.api")

DESCRIPTION = """
Medical question answering and clinical-note summarization on quantized GGUF models running on CPU.

* **POST /ask** — an MCQ (`options`) answered as `{analysis, answer, choice}`; a question about a note (`context`);
  or an open question.
* **POST /summarize** — a note or transcription in `brief`, `bullets` or `soap` style; long notes are chunked.
* `stream: true` on either → Server-Sent Events.

MedGPT is decision support for clinicians, not a diagnosis. Clinical text is never logged by default.
"""


def _pick_default(settings: Settings, engine: Engine) -> str:
    """The configured default model, or else the first one the engine has available: for the embedded engine,
    the first whose weights exist (so a fresh checkout without the fine-tuned adapter still serves the base
    model); a remote engine has every configured model available."""
    names = engine.available()
    if settings.default_model in names or not names:
        return settings.default_model
    log.warning("default model %r has no weights here; serving %r instead", settings.default_model, names[0])
    return names[0]


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logfilter.install()  # no query string or exception message in uvicorn's logs, whatever its flags
    owns_engine = engine is None  # an engine handed in (tests, embedding) is closed by whoever made it
    engine = engine or create_engine(settings)
    metrics = observability.Metrics()
    gateway = Gateway(settings=settings, engine=engine, default_model=_pick_default(settings, engine),
                      admission=Admission.from_settings(settings.admission, engine.concurrency))
    metrics.watch_queue(gateway.admission)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async def warm() -> None:  # load the default model in the background so /ready turns 200 soon
            try:
                gateway.ready = await engine.ready(gateway.default_model)
                log.info("model %s ready on %s", gateway.default_model, engine.name)
            except EngineError as exc:
                log.warning("model %s not ready: %s", gateway.default_model, exc)

        task = asyncio.create_task(warm())
        yield
        task.cancel()
        if owns_engine:
            await engine.aclose()

    app = FastAPI(title="MedGPT", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # api/docs.py serves both pages without a CDN
    app.state.gateway = gateway
    app.state.rate_limiter = ratelimit.RateLimiter(settings.rate_limits)
    security.warn_if_exposed(settings)
    errors.install(app)
    docs.install(app)
    openapi.install(app, settings.limits)  # the schema states this server's limits
    security.protect_mount(app, settings, "/metrics")  # added before the request log, so it logs the 401s
    observability.install(app, metrics)
    # The client named (by its key when keys are on: 401 without one) and held to its rate limits (429)
    guarded = [Depends(ratelimit.limited(security.client_dependency(settings)))]
    for module in (ask, summarize, models, openai_v1):
        app.include_router(module.router, dependencies=guarded,
                           responses={**security.responses(settings), **ratelimit.responses(settings.rate_limits)})
    app.include_router(health.router)
    # Outermost: a body over the limit is refused before anything reads it.
    app.add_middleware(bodylimit.BodyLimit, max_bytes=settings.limits.max_body_bytes)
    return app
