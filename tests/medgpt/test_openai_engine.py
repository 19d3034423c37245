"""The OpenAI-compatible engine against a real OpenAI-compatible server on loopback (llama-cpp-python's server
serving the same GGUF: the session's ``openai_server``), the way it talks to Groq or vLLM in production."""

import asyncio
import json

import pytest

from medgpt import prompts
from medgpt.engines import EngineUnavailable, GenerationRequest, complete
from medgpt.engines.openai_compat import OpenAIEngine
from medgpt.guards import degenerate
from medgpt.settings import ModelSpec, OpenAISettings
from tests._net import free_port

pytest.importorskip("llama_cpp.server")


@pytest.fixture(scope="module")
def server(openai_server):
    return f"{openai_server}/v1"


def engine_for(url: str, **overrides) -> OpenAIEngine:
    spec = ModelSpec(name="remote-gemma", remote="gemma-remote", n_ctx=1024)
    settings = OpenAISettings(base_url=url, api_key="test", json_mode="json_object", **overrides)
    return OpenAIEngine([spec], settings)


def test_streams_with_usage(server):
    out = asyncio.run(complete(engine_for(server), GenerationRequest(
        "remote-gemma", [{"role": "user", "content": "Name one antibiotic."}], max_tokens=12)))
    assert out.text and 1 <= out.completion_tokens <= 12


def test_structured_output(server):
    _, schema = prompts.forced_choice_messages("Q?", {"A": "x", "B": "y"}, "")
    out = asyncio.run(complete(engine_for(server), GenerationRequest(
        "remote-gemma", [{"role": "user", "content": "Pick A or B."}], max_tokens=20, json_schema=schema)))
    assert json.loads(out.text)["choice"] in {"A", "B"}


def test_repeat_penalty_reaches_a_server_configured_to_take_it(server):
    """llama.cpp's server takes ``repeat_penalty`` in the body: a greedy answer that loops without a penalty
    changes under a strong one. (Unconfigured, nothing is sent: OpenAI and Groq have no such field.)"""
    messages = [{"role": "user", "content": "List the side effects of metformin."}]
    engine = engine_for(server, repeat_penalty_field="repeat_penalty")

    async def answers() -> list[str]:  # one event loop: the client's connections belong to it
        out = []
        for penalty in (1.0, 2.0):
            request = GenerationRequest("remote-gemma", messages, max_tokens=48, repeat_penalty=penalty)
            out.append((await complete(engine, request)).text)
        return out

    unpenalised, penalised = asyncio.run(answers())
    assert degenerate(unpenalised) == "loop" and penalised != unpenalised


def test_models_maps_remote_ids(server):
    assert [m.name for m in asyncio.run(engine_for(server).models())] == ["remote-gemma"]


def test_unreachable_server_is_unavailable():
    engine = engine_for(f"http://127.0.0.1:{free_port()}/v1")
    engine._client = engine._client.with_options(max_retries=0)
    with pytest.raises(EngineUnavailable):
        asyncio.run(complete(engine, GenerationRequest("remote-gemma", [{"role": "user", "content": "x"}])))
