"""Models, health, readiness, docs and metrics."""


def test_models_lists_servable_models_and_the_default(client):
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert set(models) == {"gemma3-270m", "gemma3-270m-2k", "medgpt"}  # the one without weights is not offered
    assert models["gemma3-270m"]["default"] and models["gemma3-270m"]["engine"] == "llamacpp"
    assert models["gemma3-270m"]["size_bytes"] > 200_000_000


def test_health_and_ready(client):
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200 and r.json()["model"] == "gemma3-270m"


def test_docs_carry_working_examples(client):
    spec = client.get("/openapi.json").json()
    examples = spec["components"]["schemas"]["AskRequest"]["examples"]
    assert any("options" in e for e in examples) and any("context" in e for e in examples)
    assert client.get("/docs").status_code == 200
    # the MCQ example from the docs answers as documented
    r = client.post("/ask", json={**examples[0], "max_tokens": 8})
    assert r.status_code == 200 and r.json()["choice"] in examples[0]["options"]


def test_metrics_and_request_ids(client):
    r = client.get("/health", headers={"x-request-id": "abc123"})
    assert r.headers["x-request-id"] == "abc123"
    text = client.get("/metrics/").text
    assert 'medgpt_requests_total{route="/health",status="200"}' in text


def test_default_model_without_weights_falls_back_to_one_that_has_them(settings, engine):
    from fastapi.testclient import TestClient

    from api.main import create_app

    c = TestClient(create_app(settings.model_copy(update={"default_model": "missing-weights"}), engine))
    defaults = [m["name"] for m in c.get("/models").json()["models"] if m["default"]]
    assert defaults == ["gemma3-270m"]
