"""The gateway on Ray Serve (api/ray_serve.py): a local Ray (2 CPUs), Serve's HTTP proxy on loopback, the real
GGUF in the replica. The same routes, errors and SSE stream as the plain app; Serve shuts down cleanly."""

from __future__ import annotations

import json

import httpx
import pytest
import yaml

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from tests._net import free_port, wait_for_http  # noqa: E402

from ..conftest import ROOT  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def serve_url(tmp_path_factory, gguf_path):
    from api.ray_serve import MedGPT

    config = tmp_path_factory.mktemp("serve") / "medgpt.yaml"
    model = {"name": "medgpt", "path": str(gguf_path), "n_ctx": 2048, "prompt_format": "gemma",
             "adapter": str(ROOT / "models" / "adapters" / "medgpt-lora.gguf")}  # fmt: skip
    config.write_text(yaml.safe_dump({
        "engine": "llamacpp", "default_model": "medgpt", "models": [model],
        "auth": {"required": False}, "limits": {"generation_timeout": 900}, "rate_limits": {"requests_per_minute": 0, "tokens_per_minute": 0},
    }))  # fmt: skip
    port = free_port()
    env = {"MEDGPT_CONFIG": str(config), "MEDGPT_LLAMACPP__N_THREADS": "1"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(MedGPT.options(num_replicas=1).bind(), name="medgpt", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/ready", timeout=300)
    yield url
    serve.shutdown()
    ray.shutdown()


def test_ask_and_summarize_through_serve(serve_url):
    r = httpx.post(f"{serve_url}/ask", json={"question": "What is hypertension?", "max_tokens": 48}, timeout=600)
    assert r.status_code == 200, r.text
    assert r.json()["answer"].strip()
    note = "Patient with a cough for three days, no fever. Lungs clear. Plan: fluids and rest, return if worse."
    r = httpx.post(f"{serve_url}/summarize", json={"text": note, "max_tokens": 48}, timeout=600)
    assert r.status_code == 200, r.text
    assert r.json()["summary"].strip()
    assert r.headers.get("x-request-id")  # the app's own middleware ran in the replica


def test_an_sse_stream_passes_through_serve_unchanged(serve_url):
    body = {"question": "Which drug dissolves the clot in acute ischaemic stroke?", "max_tokens": 48, "stream": True,
            "options": {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Alteplase"}}  # fmt: skip
    with httpx.stream("POST", f"{serve_url}/ask", json=body, timeout=600) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    events = [line.removeprefix("event: ").strip() for line in text.splitlines() if line.startswith("event:")]
    assert events.count("token") >= 2 and events[-1] == "result"
    final = json.loads([line for line in text.splitlines() if line.startswith("data:")][-1].removeprefix("data:"))
    assert final["choice"] in body["options"]


def test_errors_are_the_apps_own(serve_url):
    r = httpx.post(f"{serve_url}/ask", json={"question": "x", "model": "nope"}, timeout=60)
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = httpx.get(f"{serve_url}/ask", params={"prompt": " "}, timeout=60)
    assert r.status_code == 422
