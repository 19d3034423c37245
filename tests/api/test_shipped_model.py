"""The shipped `medgpt` model (base Q4_K_M + the committed rsLoRA adapter) next to the base model, per request."""

import asyncio

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from medgpt import tasks
from medgpt.settings import ROOT, Settings
from tests.conftest import MCQ

ADAPTER = ROOT / "models" / "adapters" / "medgpt-lora.gguf"


@pytest.fixture(scope="module")
def shipped(settings, gguf_path):
    if not ADAPTER.exists():
        pytest.fail(f"{ADAPTER} is not in the checkout")
    medgpt = Settings().model("medgpt").model_copy(update={"n_ctx": 1024})
    both = settings.model_copy(update={"models": [medgpt, *settings.models], "default_model": "medgpt"})
    with TestClient(create_app(both)) as client:
        yield client


def test_medgpt_is_the_default_and_lists_its_adapter(shipped):
    models = {m["name"]: m for m in shipped.get("/models").json()["models"]}
    assert models["medgpt"]["default"] and not models["gemma3-270m"]["default"]
    assert models["medgpt"]["size_bytes"] > models["gemma3-270m"]["size_bytes"]  # base + adapter


def test_per_request_choice_between_medgpt_and_base(shipped):
    body = {**MCQ, "max_tokens": 96}
    tuned = shipped.post("/ask", json=body).json()
    base = shipped.post("/ask", json={**body, "model": "gemma3-270m"}).json()
    assert (tuned["model"], base["model"]) == ("medgpt", "gemma3-270m")
    assert tuned["choice"] in MCQ["options"] and base["choice"] in MCQ["options"]


def test_the_adapter_writes_the_trained_format_unconstrained_where_the_base_does_not(shipped):
    """Without grammar or rescue: what the weights themselves do (the evaluator's format compliance)."""
    engine = shipped.app.state.gateway.engine

    def raw(model):
        return asyncio.run(tasks.answer_mcq(engine, model, MCQ["question"], MCQ["options"],
                                            sampling=tasks.Sampling(max_tokens=160), constrained=False))

    tuned, base = raw("medgpt"), raw("gemma3-270m")
    assert tuned.well_formed and tuned.choice in MCQ["options"]
    assert not base.well_formed  # the base model echoes the instruction instead
