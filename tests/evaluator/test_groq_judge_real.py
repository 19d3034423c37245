"""The Groq judge through the official ``groq`` client against a real OpenAI-compatible server on loopback.

What is real: the ``groq`` client, llama-cpp-python's server (the session's ``openai_server``) serving the
real Gemma 3 270M GGUF under ``/openai`` (the Groq client posts to ``<base_url>/openai/v1/...``), its JSON
mode, and the engine's retries (the SDK's). What is injected: a tiny loopback proxy in front of the server
answers the first request with 429 (Retry-After: 0) and forwards every later one unchanged.
"""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest

from tests._net import LoopbackServer

pytest.importorskip("groq")

from evaluator.judges.base import Judge  # noqa: E402
from evaluator.judges.groq_judge import GroqJudge  # noqa: E402
from evaluator.judges.rubrics import mcq_judge_messages  # noqa: E402
from evaluator.retry import Backoff  # noqa: E402

pytestmark = pytest.mark.slow


async def _grade_and_close(judge: Judge):
    try:
        return await judge.grade(MESSAGES)
    finally:
        await judge.aclose()


class _Proxy(LoopbackServer):
    """Loopback proxy: the first ``fail_first`` POSTs get 429, the rest are forwarded to ``upstream``."""

    def __init__(self, upstream: str, fail_first: int = 1):
        self.answered: list[tuple[str, dict, int]] = []

        def handle(method: str, path: str, headers: dict, body: bytes):
            payload = json.loads(body or b"{}")
            if len(self.answered) < fail_first:
                self.answered.append((path, payload, 429))
                error = {"error": {"message": "rate limited (injected)", "type": "rate_limit"}}
                return 429, {"retry-after": "0"}, error
            resp = httpx.post(
                upstream + path, content=body, headers={"content-type": "application/json"}, timeout=300
            )
            self.answered.append((path, payload, resp.status_code))
            content_type = resp.headers.get("content-type", "application/json")
            return resp.status_code, {"content-type": content_type}, resp.content

        super().__init__(handle)


MESSAGES = mcq_judge_messages(
    "A patient with a pulmonary embolism needs immediate anticoagulation. Which drug?",
    {"A": "Aspirin", "B": "Heparin", "C": "Ibuprofen", "D": "Vitamin K"},
    "B: Heparin",
    "<analysis>Heparin acts immediately as an anticoagulant.</analysis>\n<answer>B: Heparin</answer>",
)


def test_groq_client_base_url_json_mode_and_retry_on_429(openai_server):
    with _Proxy(openai_server, fail_first=1) as proxy:
        backend = GroqJudge("gemma3-270m", base_url=proxy.url, max_tokens=64, json_mode="object")
        assert backend.external is False  # loopback: no de-identification needed, no API key needed
        judge = Judge(backend, backoff=Backoff(attempts=3, base_delay=0.05, max_delay=0.2))
        verdict = asyncio.run(_grade_and_close(judge))

    # Base-URL override: the official client reached our server, on the path Groq uses.
    assert [p for p, _, _ in proxy.answered] == ["/openai/v1/chat/completions"] * 2
    # Retry: the injected 429 was retried once by the engine's SDK (which honours Retry-After); the
    # evaluator's loop, which would count a retry of its own, had nothing left to retry.
    assert [s for _, _, s in proxy.answered] == [429, 200]
    assert judge.retries == 0
    # JSON mode was requested and the server's reply is a JSON object (grammar-constrained; with 64 tokens a
    # 270M model may be cut off inside it, which the lenient parser then handles).
    assert proxy.answered[1][1]["response_format"] == {"type": "json_object"}
    assert verdict.raw.lstrip().startswith("{")
    # Whatever keys a 270M model chose, the verdict is a score in range or explicitly unscored, never
    # invented.
    assert verdict.score is None or 0 <= verdict.score <= 5
    if verdict.score is None:
        assert verdict.error == "reply could not be parsed to a score"


def test_groq_client_with_schema_gets_a_score(openai_server):
    """The contract, not one CPU's tokens: which words a 270M model writes differs between machines, so a reply may
    be cut by ``max_tokens`` inside its explanation. What must hold everywhere: the server enforces the schema (the
    reply opens as the schema's object, score first, an allowed value), the score is parsed from it, and a reply
    that is complete JSON carries the same score."""
    backend = GroqJudge("gemma3-270m", base_url=openai_server, max_tokens=48, json_mode="schema")
    judge = Judge(backend, backoff=Backoff(attempts=2, base_delay=0.05, max_delay=0.2))
    verdict = asyncio.run(_grade_and_close(judge))
    assert verdict.error is None, verdict
    opening = re.match(r'\s*\{\s*"score"\s*:\s*([0-9]+)', verdict.raw)
    assert opening, verdict.raw
    assert int(opening.group(1)) == verdict.score
    assert verdict.score in {0, 1, 2, 3, 4, 5}
    try:
        complete = json.loads(verdict.raw)
    except json.JSONDecodeError:
        return  # cut by max_tokens inside the explanation: the score was still read from the enforced opening
    assert complete["score"] == verdict.score


def test_groq_judge_refuses_to_run_against_the_cloud_without_a_key(monkeypatch):
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    with pytest.raises(ValueError, match="GROQ_API_KEY"):
        GroqJudge("llama-3.3-70b-versatile")
    monkeypatch.setenv("GROQ_API_KEY", "gsk_test")
    assert GroqJudge("llama-3.3-70b-versatile").external is True  # the cloud: text is de-identified first
