"""``--url``: the HTTP sampler against the gateway's documented contract (POST /ask, POST /summarize), served
here by an httpx MockTransport that checks the request bodies. The real gateway is the lead's; its schema is
in api/schemas.py."""

import asyncio
import json

import httpx
import pytest

from evaluator.evals.mcq import MCQEval
from evaluator.samplers import GatewaySampler
from evaluator.scorers.judge import JudgeScorer
from evaluator.types import MCQItem, NoteQAItem, OpenItem, SummaryItem

ITEM = MCQItem(id="q", question="Which drug?", options={"A": "Aspirin", "B": "Heparin"}, answer="B")


def _handler(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    if request.url.path == "/ask" and "options" not in body:
        # note QA (context) or an open question: the free-text form of the response
        mode = "note_qa" if "context" in body else "open"
        assert body["max_tokens"] == 128
        assert mode == "open" or body["context"] == "Started metformin 500 mg."
        return httpx.Response(
            200,
            json={
                "model": "medgpt",
                "mode": mode,
                "answer": "Metformin 500 mg." if mode == "note_qa" else "Rest and ice.",
                "finish_reason": "stop",
                "usage": {"prompt_tokens": 90, "completion_tokens": 6},
                "timings": {"total_ms": 400.0, "tokens_per_second": 15.0},
            },
        )
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
    # The gateway serves only the constrained answer: the sampler says so; the MCQ eval skips the raw pass.
    assert _sampler().unconstrained is False
    with pytest.raises(ValueError):
        asyncio.run(_sampler().answer_mcq(ITEM, constrained=False))
    outputs = asyncio.run(MCQEval(JudgeScorer([]), raw=True).generate(_sampler(), ITEM))
    assert outputs["raw"] is None and outputs["served"].choice == "B"


def test_summarize_and_http_errors_become_row_errors():
    out = asyncio.run(_sampler().summarize(SummaryItem(id="s", source="t", text="Note.", reference="r")))
    assert out.summary == "Chest pain." and out.seconds == 0.3
    failing = _sampler(lambda r: httpx.Response(503, json={"detail": "engine busy"}))
    err = asyncio.run(failing.answer_mcq(ITEM))
    assert err.error.startswith("HTTP 503") and err.choice is None


def test_note_qa_and_open_questions_go_through_ask():
    note = NoteQAItem(
        id="n", source="t", note="Started metformin 500 mg.", question="Which drug?", reference="r"
    )
    out = asyncio.run(_sampler().answer_note(note))
    assert (out.text, out.finish_reason, out.seconds, out.error) == ("Metformin 500 mg.", "stop", 0.4, None)
    out = asyncio.run(_sampler().answer_open(OpenItem(id="o", source="t", question="Knee pain?")))
    assert out.text == "Rest and ice." and out.completion_tokens == 6


def test_an_echo_refused_by_the_gateway_is_marked_as_such():
    detail = "the model echoed the prompt instead of answering (model 'medgpt', also on a retry)"
    echo = _sampler(lambda r: httpx.Response(502, json={"detail": detail}))
    out = asyncio.run(echo.answer_open(OpenItem(id="o", source="t", question="Knee pain?")))
    assert out.error.startswith("HTTP 502") and out.refused == "echo"
    other = _sampler(lambda r: httpx.Response(502, json={"detail": "engine returned nothing usable"}))
    out = asyncio.run(other.answer_open(OpenItem(id="o", source="t", question="Knee pain?")))
    assert out.error and out.refused is None


class _ThreadedClient:
    """The session's real gateway (FastAPI TestClient over the real engine and GGUF) behind the async ``post``
    the sampler uses."""

    def __init__(self, client):
        self.client = client

    async def post(self, path, json):
        return await asyncio.to_thread(self.client.post, path, json=json)

    async def aclose(self):
        pass


def test_real_gateway_over_http(client):
    """``--url`` against the real gateway app (tests/conftest.py: real llama.cpp engine, real Gemma GGUF)."""
    # the shipped model: the base model's summaries are echoes, which the gateway refuses (502)
    sampler = GatewaySampler(
        "http://testserver", "medgpt", max_tokens=32, client=_ThreadedClient(client)
    )
    item = MCQItem(
        id="g",
        question="Which drug is an anticoagulant?",
        options={"A": "Heparin", "B": "Insulin"},
        answer="A",
    )
    out = asyncio.run(sampler.answer_mcq(item))
    assert out.error is None, out.error
    assert out.choice in item.options and out.answer == f"{out.choice}: {item.options[out.choice]}"
    assert out.completion_tokens > 0 and out.seconds > 0
    served = out.served_text(item.options)
    assert served.startswith("<analysis>") and served.endswith(f"<answer>{out.answer}</answer>")
    s = asyncio.run(
        sampler.summarize(
            SummaryItem(id="s", source="t", text="Chest pain for 2 days. ECG normal.", reference="r")
        )
    )
    assert s.error is None and s.summary and s.chunks == 1
