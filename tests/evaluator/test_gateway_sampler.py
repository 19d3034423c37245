"""``--url``: the HTTP sampler against the gateway's documented contract (POST /ask, POST /summarize), served
here by an httpx MockTransport that checks the request bodies. The real gateway is the lead's; its schema is
in api/schemas.py."""

import asyncio
import json

import httpx

from evaluator.samplers import GatewaySampler
from evaluator.types import MCQItem, SummaryItem

ITEM = MCQItem(id="q", question="Which drug?", options={"A": "Aspirin", "B": "Heparin"}, answer="B")


def _handler(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    if request.url.path == "/ask":
        assert body["options"] == ITEM.options and body["model"] == "medgpt" and body["max_tokens"] == 64
        return httpx.Response(
            200,
            json={
                "model": "medgpt",
                "mode": "mcq",
                "answer": "B: Heparin",
                "analysis": "Anticoagulant.",
                "choice": "B",
                "rescued": False,
                "usage": {"prompt_tokens": 120, "completion_tokens": 12},
                "timings": {"total_ms": 850.0, "tokens_per_second": 14.1},
            },
        )
    if request.url.path == "/summarize":
        assert body["style"] == "brief"
        return httpx.Response(
            200,
            json={
                "model": "medgpt",
                "summary": "Chest pain.",
                "style": "brief",
                "chunks": 1,
                "usage": {"prompt_tokens": 50, "completion_tokens": 4},
                "timings": {"total_ms": 300.0, "tokens_per_second": 13.0},
            },
        )
    return httpx.Response(404, json={"detail": "not found"})


def _sampler(handler=_handler) -> GatewaySampler:
    client = httpx.AsyncClient(base_url="http://gateway", transport=httpx.MockTransport(handler))
    return GatewaySampler("http://gateway", "medgpt", max_tokens=64, client=client)


def test_ask_maps_the_response():
    out = asyncio.run(_sampler().answer_mcq(ITEM))
    assert (out.choice, out.answer, out.error) == ("B", "B: Heparin", None)
    assert out.raw_text == "<analysis>Anticoagulant.</analysis>\n<answer>B: Heparin</answer>"
    assert out.well_formed is None  # the gateway does not report it: unknown, not assumed
    assert (out.completion_tokens, out.seconds) == (12, 0.85)
    # The gateway always serves the constrained answer: no raw pass over HTTP.
    assert asyncio.run(_sampler().answer_mcq(ITEM, constrained=False)).error


def test_summarize_and_http_errors_become_row_errors():
    out = asyncio.run(_sampler().summarize(SummaryItem(id="s", source="t", text="Note.", reference="r")))
    assert out.summary == "Chest pain." and out.seconds == 0.3
    failing = _sampler(lambda r: httpx.Response(503, json={"detail": "engine busy"}))
    err = asyncio.run(failing.answer_mcq(ITEM))
    assert err.error.startswith("HTTP 503") and err.choice is None
