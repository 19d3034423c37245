"""Bad input gets a clear 4xx, never a 500, and the server keeps serving afterwards."""

import logging

import pytest

from tests.conftest import MCQ

BAD = [
    ("empty body", {"content": b""}, 422),
    ("not json", {"content": b"question=hi", "headers": {"content-type": "application/json"}}, 422),
    ("non-utf8 body", {"content": b'{"question": "\xff\xfe caf\xe9"}', "headers": {"content-type": "application/json"}}, 400),
    ("empty question", {"json": {"question": ""}}, 422),
    ("blank question", {"json": {"question": "   "}}, 422),
    ("wrong type", {"json": {"question": 42}}, 422),
    ("options not a dict", {"json": {"question": "q", "options": ["a", "b"]}}, 422),
    ("one option", {"json": {"question": "q", "options": {"A": "only"}}}, 422),
    ("eleven options", {"json": {"question": "q", "options": {c: c for c in "ABCDEFGHIJK"}}}, 422),
    ("bad option key", {"json": {"question": "q", "options": {"A": "x", "7": "y"}}}, 422),
    ("blank option", {"json": {"question": "q", "options": {"A": "x", "B": " "}}}, 422),
    ("negative max_tokens", {"json": {"question": "q", "max_tokens": -1}}, 422),
    ("temperature too high", {"json": {"question": "q", "temperature": 9}}, 422),
    ("unknown field", {"json": {"question": "q", "prompt": "x"}}, 422),
    ("unknown model", {"json": {"question": "q", "model": "gpt-17"}}, 404),
    ("model without weights", {"json": {"question": "q", "model": "missing-weights"}}, 404),
    ("1 MB context", {"json": {"question": "q", "context": "a" * 1_000_000}}, 413),
    ("over server max_tokens", {"json": {"question": "q", "max_tokens": 4000}}, 422),
]


@pytest.mark.parametrize("name,kwargs,status", BAD, ids=[b[0] for b in BAD])
def test_bad_ask_input(client, name, kwargs, status):
    r = client.post("/ask", **kwargs)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail


def test_validation_messages_name_the_problem(client):
    r = client.post("/ask", json={"question": "q", "options": {"A": "only"}})
    assert "between 2 and 10 options" in r.json()["detail"]
    r = client.post("/ask", content=b"{not json", headers={"content-type": "application/json"})
    assert "JSON" in r.json()["detail"]


def test_error_responses_do_not_echo_clinical_text(client):
    secret = "Patient John Q Example MRN 99812"
    r = client.post("/ask", json={"question": secret, "options": {"A": secret}})
    assert r.status_code == 422 and secret not in r.text


def test_bad_summarize_input(client):
    assert client.post("/summarize", json={"text": ""}).status_code == 422
    assert client.post("/summarize", json={"text": "x", "style": "haiku"}).status_code == 422
    assert client.post("/summarize", json={"text": "x" * 1_000_000}).status_code == 413
    assert client.post("/summarize", json={"text": "x", "model": "nope"}).status_code == 404


def test_prompt_too_long_for_the_model_is_413(client):
    r = client.post("/ask", json={"question": "What is the diagnosis?", "context": "fever " * 3000, "max_tokens": 8})
    assert r.status_code == 413 and "tokens" in r.json()["detail"]


def test_server_keeps_serving_after_errors(client):
    for _ in range(3):
        client.post("/ask", content=b"\x00\x01")
    r = client.post("/ask", json={**MCQ, "max_tokens": 8})
    assert r.status_code == 200 and r.json()["choice"] in MCQ["options"]


def test_generation_over_the_timeout_is_504_and_the_next_request_is_served(settings, engine):
    from fastapi.testclient import TestClient

    from api.main import create_app

    slow = settings.model_copy(update={"limits": settings.limits.model_copy(update={"generation_timeout": 0.3})})
    with TestClient(create_app(slow, engine)) as c:
        r = c.post("/ask", json={"question": "Explain heart failure in detail.", "max_tokens": 500})
        assert r.status_code == 504 and "exceeded" in r.json()["detail"]
    r = TestClient(create_app(settings, engine)).post("/ask", json={"question": "Define fever.", "max_tokens": 4})
    assert r.status_code == 200


def test_logs_carry_counts_but_no_clinical_text(client, caplog):
    secret = "Patient Jane Roe, MRN 4471, has metastatic cancer"
    with caplog.at_level("INFO", logger="medgpt.api"):
        r = client.post("/ask", json={"question": secret, "max_tokens": 4})
    assert r.status_code == 200
    assert "completion_tokens=" in caplog.text and "Jane Roe" not in caplog.text


def test_every_core_error_has_its_status_here_and_none_in_the_core():
    """The core's errors carry no HTTP; api/errors.py maps each family (a subclass answers as its family)."""
    from api.errors import STATUS, engine_error_status
    from medgpt import engines
    from medgpt.tasks import EchoedPrompt

    expected = {
        engines.ModelNotFound("m"): 404,
        engines.PromptTooLong("p"): 413,
        engines.Unsupported("grammar"): 501,
        engines.EngineUnavailable("down"): 503,
        engines.GenerationTimeout("slow"): 504,
        engines.InvalidOutput("junk"): 502,
        EchoedPrompt("m", "open", ["echo"]): 502,
        engines.EngineError("other"): 502,
    }
    assert {type(exc): engine_error_status(exc)[0] for exc in expected} == {
        type(exc): status for exc, status in expected.items()
    }
    assert set(STATUS) <= {type(exc) for exc in expected} | {engines.EngineError}
    assert not any(hasattr(cls, "status") for cls in STATUS)


def test_a_503_passes_on_the_servers_retry_after_or_a_default():
    from api.errors import RETRY_AFTER, engine_error_status
    from medgpt.engines import EngineUnavailable

    assert engine_error_status(EngineUnavailable("rate limited", retry_after=3.2))[1] == {"Retry-After": "3"}
    assert engine_error_status(EngineUnavailable("down"))[1] == {"Retry-After": str(RETRY_AFTER)}


#: Identifying text a client put in ``model`` (issue 21): it must come back in no error body and reach no log line.
PLANTED_MODEL = "Zebulon Quixmorton MRN 48213977"


def test_an_unknown_model_is_not_echoed_in_bodies_or_logs(client, caplog):
    """Each route that takes a model: the 404 says "unknown model" and lists the available ones, and nothing the
    client wrote there is in the body or in any log line, at any level."""
    calls = [
        ("post", "/ask", {"json": {"question": "q", "model": PLANTED_MODEL}}),
        ("post", "/ask", {"json": {**MCQ, "model": PLANTED_MODEL}}),
        ("get", "/ask", {"params": {"prompt": "q", "model": PLANTED_MODEL}}),
        ("post", "/summarize", {"json": {"text": "x", "model": PLANTED_MODEL}}),
        ("post", "/v1/chat/completions", {"json": {"model": PLANTED_MODEL, "messages": [{"role": "user", "content": "q"}]}}),
        ("post", "/v1/chat/completions",
         {"json": {"model": PLANTED_MODEL, "messages": [{"role": "user", "content": "q"}], "stream": True}}),
        ("get", f"/v1/models/{PLANTED_MODEL}", {}),
    ]  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        for method, route, kwargs in calls:
            r = getattr(client, method)(route, **kwargs)
            assert r.status_code == 404, (route, r.text)
            assert "unknown model" in r.text and "medgpt" in r.text, r.text
            for word in ("Zebulon", "Quixmorton", "48213977"):
                assert word not in r.text, (route, r.text)
    # the gateway's lines (the test client's own httpx lines name the URL it asked for)
    lines = [record.getMessage() for record in caplog.records if not record.name.startswith("httpx")]
    assert any("unknown model" in line for line in lines)
    for word in ("Zebulon", "Quixmorton", "48213977"):
        assert not [line for line in lines if word in line]
