"""The judge interface, the lenient verdict parser, and the wrapper every judge call goes through.

A judge backend only has to send messages and return the reply text (:meth:`JudgeBackend.send`); it raises
:class:`~evaluator.retry.Retryable` for 429/5xx/connection trouble. :class:`Judge` adds what every backend
needs: a concurrency limit, retries with backoff and jitter, de-identification when the backend is external,
and parsing the reply into a :class:`~evaluator.types.Verdict` (None when it cannot be parsed: unscored, never
invented).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import random
import re
from typing import Protocol
from urllib.parse import urlparse

from evaluator.deid import scrub_text
from evaluator.retry import Backoff, Retryable, with_retries
from evaluator.types import Verdict
from medgpt.prompts import Message

log = logging.getLogger(__name__)

MIN_SCORE, MAX_SCORE = 0, 5


class JudgeBackend(Protocol):
    name: str
    #: True when the backend sends text off this machine (a remote API): clinical text is de-identified first.
    external: bool

    async def send(self, messages: list[Message]) -> str: ...

    async def aclose(self) -> None: ...


def is_loopback_url(url: str | None) -> bool:
    """Whether ``url`` points at this machine (localhost, 127.0.0.0/8, ::1)."""
    if not url:
        return False
    host = urlparse(url if "://" in url else f"http://{url}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_DECODER = json.JSONDecoder()


def _first_json_object(text: str) -> dict | None:
    """The first ``{...}`` in ``text`` that decodes as a JSON object (``json.JSONDecoder.raw_decode`` from
    each ``{`` in turn, so prose or a code fence around the object does not matter)."""
    for start, ch in enumerate(text):
        if ch != "{":
            continue
        try:
            obj, _ = _DECODER.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


_SCORE_RE = re.compile(r"""["']?score["']?\s*[:=]\s*["']?(-?\d+(?:\.\d+)?)""", re.I)
_EXPL_RE = re.compile(r"""["']?explanation["']?\s*[:=]\s*["']((?:[^"'\\]|\\.)*)""", re.I | re.S)


def _as_score(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        score = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return score if MIN_SCORE <= score <= MAX_SCORE else None


def parse_verdict(text: str) -> tuple[float | None, str]:
    """``(score, explanation)`` from a judge reply; tolerant of code fences, prose around the JSON, single
    quotes, a truncated explanation and ``score: "4"``. Out-of-range or missing score → None."""
    if not text or not text.strip():
        return None, ""
    obj = _first_json_object(text)
    if obj is not None and "score" in obj:
        return _as_score(obj.get("score")), str(obj.get("explanation", "")).strip()
    m = _SCORE_RE.search(text)
    score = _as_score(m.group(1)) if m else None
    e = _EXPL_RE.search(text)
    explanation = e.group(1).strip() if e else ""
    return score, explanation


class Judge:
    """A backend plus the limits and safeguards every judge call needs."""

    def __init__(
        self, backend: JudgeBackend, *, concurrency: int = 2, backoff: Backoff | None = None, seed: int = 0
    ):
        self.backend = backend
        self.name = backend.name
        self.external = backend.external
        self.backoff = backoff or Backoff()
        self._semaphore = asyncio.Semaphore(max(1, concurrency))
        self._rng = random.Random(seed)
        self.retries = 0

    def _on_retry(self, attempt: int, exc: Exception, delay: float) -> None:
        self.retries += 1
        log.warning("judge %s: %s; retry %d in %.2fs", self.name, exc, attempt, delay)

    async def grade(self, messages: list[Message]) -> Verdict:
        if self.external:
            messages = [{**m, "content": scrub_text(m["content"])} for m in messages]
        async with self._semaphore:
            try:
                reply = await with_retries(
                    lambda: self.backend.send(messages), self.backoff, rng=self._rng, on_retry=self._on_retry
                )
            except Exception as exc:  # a failed judge call is an unscored item, not a crashed run
                return Verdict(self.name, None, "", error=f"{type(exc).__name__}: {exc}")
        score, explanation = parse_verdict(reply)
        if score is None:
            return Verdict(
                self.name, None, explanation, raw=reply, error="reply could not be parsed to a score"
            )
        return Verdict(self.name, score, explanation, raw=reply)

    async def aclose(self) -> None:
        await self.backend.aclose()


__all__ = ["Judge", "JudgeBackend", "Retryable", "is_loopback_url", "parse_verdict"]
