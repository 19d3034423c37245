"""Request logs and Prometheus metrics that never carry clinical text: ids, routes, status, timings only.

The metrics registry belongs to the app instance (no process-global collectors), so several apps in one process
(tests) do not collide.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app

if TYPE_CHECKING:
    from medgpt.admission import Admission

log = logging.getLogger("medgpt.api")

#: The current request's id, for log lines written deeper down (set by the middleware, per request task).
request_id: ContextVar[str] = ContextVar("request_id", default="-")
#: The app's metrics, for counts made deeper down (guards, finish reasons); set by the middleware per request.
current_metrics: ContextVar[Metrics | None] = ContextVar("current_metrics", default=None)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "medgpt_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "medgpt_request_seconds",
            "HTTP request latency (until the response starts for streams)",
            ["route"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160),
            registry=self.registry,
        )
        # Labels are closed sets (kind, mode, reason), never text.
        self.guards = Counter(
            "medgpt_guard",
            "Degenerate-output guards fired: kind=repetition (a looping generation cut), echo (an answer that "
            "copied the prompt: retried, or refused with a 502 when the retry echoed too)",
            ["kind", "mode"],
            registry=self.registry,
        )
        self.finishes = Counter(
            "medgpt_finish",
            "Answers by finish reason: stop, length, repetition (loop cut), echo (refused: the prompt echoed back)",
            ["reason", "mode"],
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "medgpt_queue_wait_seconds",
            "Seconds a request waited in the admission queue before its turn (0 when it started at once)",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160),
            registry=self.registry,
        )
        self.queue_refused = Counter(
            "medgpt_queue_refused",
            "Requests refused at once (503 + Retry-After): the queue was full or the wait would pass the deadline",
            registry=self.registry,
        )

    def count_result(self, mode: str, finish_reason: str | None, guards: list[str]) -> None:
        """One task outcome: its finish reason and every guard that fired during it."""
        self.finishes.labels(finish_reason or "unknown", mode).inc()
        for kind in guards:
            self.guards.labels(kind, mode).inc()

    def watch_queue(self, admission: Admission) -> None:
        """The depth of the engine's admission queue, read at each scrape (its waits and refusals are counted as
        requests meet it: :func:`observe_queue_wait`, :func:`count_queue_refused`)."""
        waiting = Gauge("medgpt_queue_waiting", "Requests waiting for a turn at the engine", registry=self.registry)
        waiting.set_function(lambda: admission.waiting)
        running = Gauge("medgpt_queue_running", "Requests holding a turn at the engine", registry=self.registry)
        running.set_function(lambda: admission.running)


#: A client's ``X-Request-ID`` that is echoed and logged: a short token, nothing that could split a header or a
#: log line, carry markup into a log viewer, or fill the log.
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def valid_request_id(value: str | None) -> str | None:
    """``value`` when it is a usable request id (:data:`REQUEST_ID`), else None (the caller makes a fresh one)."""
    return value if value is not None and REQUEST_ID.fullmatch(value) else None


def install(app: FastAPI, metrics: Metrics) -> None:
    app.mount("/metrics", make_asgi_app(registry=metrics.registry))

    @app.middleware("http")
    async def request_log(request: Request, call_next):
        rid = valid_request_id(request.headers.get("x-request-id")) or uuid.uuid4().hex[:12]
        request_id.set(rid)
        current_metrics.set(metrics)
        started = time.perf_counter()
        response = await call_next(request)
        seconds = time.perf_counter() - started
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(seconds)
        response.headers["x-request-id"] = rid
        log.info("%s %s %s %d %.0fms", rid, request.method, path, response.status_code, seconds * 1000)
        return response


def count_result(mode: str, finish_reason: str | None, guards: list[str]) -> None:
    """Count a task outcome in the current app's metrics (no-op outside a request)."""
    metrics = current_metrics.get()
    if metrics is not None:
        metrics.count_result(mode, finish_reason, guards)


def observe_queue_wait(seconds: float) -> None:
    """A request's wait for its turn, in the current app's metrics (no-op outside a request)."""
    metrics = current_metrics.get()
    if metrics is not None:
        metrics.queue_wait.observe(seconds)


def count_queue_refused() -> None:
    """A request the admission queue refused, in the current app's metrics (no-op outside a request)."""
    metrics = current_metrics.get()
    if metrics is not None:
        metrics.queue_refused.inc()


def log_generation(model: str, prompt_tokens: int, completion_tokens: int, seconds: float) -> None:
    """What a generation cost: counts and time, never its text."""
    log.info(
        "%s model=%s prompt_tokens=%d completion_tokens=%d seconds=%.2f",
        request_id.get(), model, prompt_tokens, completion_tokens, seconds,
    )


def log_text(enabled: bool, **texts: str | None) -> None:
    """Clinical text goes to the log only when ``log_text`` is switched on (off by default)."""
    if enabled:
        for name, text in texts.items():
            if text is not None:
                log.info("%s %s=%r", request_id.get(), name, text)
