"""Bounded work at the door: the raw body is limited before parsing, options and texts have caps, the query-string
form validates like the body, and the OpenAPI schema states the limits this server enforces."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from medgpt.settings import Limits, RateLimits
from tests.conftest import MCQ


def _app(settings, engine, **limits):
    from api.main import create_app

    return create_app(
        settings.model_copy(
            update={"limits": Limits(**limits), "rate_limits": RateLimits(requests_per_minute=0, tokens_per_minute=0)}
        ),
        engine,
    )


@pytest.fixture(scope="module")
def small(settings, engine):
    with TestClient(_app(settings, engine, max_body_bytes=2_000, max_option_chars=50, max_tokens=16)) as c:
        yield c


def test_a_declared_body_over_the_limit_is_refused_before_parsing(small):
    body = b'{"question": "' + b"a" * 3_000 + b'"}'
    r = small.post("/ask", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "2,000 bytes" in r.json()["detail"]
    # not JSON at all, but over the limit: the size answers first (nothing parsed it)
    r = small.post("/ask", content=b"x" * 3_000, headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_a_chunked_body_over_the_limit_is_refused_while_it_arrives(small):
    sent = []

    def chunks():
        for _ in range(100):  # 100 x 100 bytes, no Content-Length: only counting can stop it
            sent.append(1)
            yield b"a" * 100

    r = small.post("/ask", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert "content-length" not in {k.lower() for k in r.request.headers}


def test_a_body_under_the_limit_still_passes(small):
    r = small.post("/ask", json={"question": "x", "model": "no-such-model", "max_tokens": 8})
    assert r.status_code == 404  # got past the size check to the model lookup


def test_a_bad_content_length_is_a_400(small):
    r = small.post("/ask", content=b"{}", headers={"content-type": "application/json", "content-length": "abc"})
    assert r.status_code == 400


def test_an_option_over_its_cap_is_refused_before_any_work(small):
    options = {**MCQ["options"], "B": "x" * 51}
    r = small.post("/ask", json={"question": MCQ["question"], "options": options})
    assert r.status_code == 413 and "option B" in r.json()["detail"]


def test_get_ask_with_a_blank_prompt_is_a_422_not_a_500(client):
    r = client.get("/ask", params={"prompt": " "})
    assert r.status_code == 422 and "blank" in r.json()["detail"]


def test_the_schema_states_the_configured_limits(settings, engine):
    for limit in (16, 512):
        schema = _app(settings, engine, max_tokens=limit, max_question_chars=300).openapi()
        components = schema["components"]["schemas"]
        for model in ("AskRequest", "SummarizeRequest"):
            branches = components[model]["properties"]["max_tokens"]["anyOf"]
            assert [b["maximum"] for b in branches if b.get("type") == "integer"] == [limit]
        question = components["AskRequest"]["properties"]["question"]
        assert question["maxLength"] == 300
        prompt = next(p for p in schema["paths"]["/ask"]["get"]["parameters"] if p["name"] == "prompt")
        assert prompt["schema"]["maxLength"] == 300


def test_a_schema_valid_max_tokens_is_served_and_one_past_it_refused(small):
    maximum = 16
    r = small.post("/ask", json={"question": "x", "model": "no-such-model", "max_tokens": maximum})
    assert r.status_code == 404  # accepted up to the model lookup
    r = small.post("/ask", json={"question": "x", "max_tokens": maximum + 1})
    assert r.status_code == 422


def test_every_status_a_generating_route_returns_is_documented(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path, method in (("/ask", "post"), ("/ask", "get"), ("/summarize", "post")):
        documented = set(paths[path][method]["responses"])
        assert {"200", "400", "404", "413", "422", "502", "503", "504"} <= documented, (path, documented)
