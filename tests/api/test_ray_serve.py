"""The gateway on Ray Serve (api/ray_serve.py): a local Ray (2 CPUs), Serve's HTTP proxy on loopback, the real
GGUF in the replica. The same routes, errors and SSE stream as the plain app; Serve shuts down cleanly."""

from __future__ import annotations

import json

import httpx
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from tests._net import free_port, wait_for_http

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def serve_url(settings_file):
    from api.ray_serve import MedGPT

    port = free_port()
    env = {"MEDGPT_CONFIG": str(settings_file), "MEDGPT_LLAMACPP__N_THREADS": "1"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(MedGPT.options(num_replicas=1).bind(), name="medgpt", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/ready", timeout=300)
    yield url
    serve.shutdown()
    ray.shutdown()


MCQ = {"question": "Which drug dissolves the clot in acute ischaemic stroke?",
       "options": {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Alteplase"}}  # fmt: skip


def test_ask_and_summarize_through_serve(serve_url):
    r = httpx.post(f"{serve_url}/ask", json={**MCQ, "max_tokens": 48}, timeout=600)
    assert r.status_code == 200, r.text
    assert r.json()["choice"] in MCQ["options"]  # the grammar makes an MCQ answer on any machine
    assert r.headers.get("x-request-id")  # the app's own middleware ran in the replica
    note = (
        "Patient with a cough for three days, no fever. Lungs clear. Plan: fluids and rest, return if worse."
    )
    r = httpx.post(f"{serve_url}/summarize", json={"text": note, "max_tokens": 48}, timeout=600)
    # a summary, or (other tokens on another machine) the echo guard's refusal as the app answers it
    assert (r.status_code == 200 and r.json()["summary"].strip()) or (
        r.status_code == 502 and r.json()["detail"] == "the model's output could not be used"), r.text  # fmt: skip


def test_an_sse_stream_passes_through_serve_unchanged(serve_url):
    body = {**MCQ, "max_tokens": 48, "stream": True}
    with httpx.stream("POST", f"{serve_url}/ask", json=body, timeout=600) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    events = [line.removeprefix("event: ").strip() for line in text.splitlines() if line.startswith("event:")]
    assert events.count("token") >= 2 and events[-1] == "result"
    final = json.loads(
        [line for line in text.splitlines() if line.startswith("data:")][-1].removeprefix("data:")
    )
    assert final["choice"] in body["options"]


def test_errors_are_the_apps_own(serve_url):
    r = httpx.post(f"{serve_url}/ask", json={"question": "x", "model": "nope"}, timeout=60)
    # the app's own 404 through Serve's proxy: the available models listed, the client's name not echoed
    assert r.status_code == 404 and "unknown model" in r.json()["detail"] and "nope" not in r.json()["detail"]
    r = httpx.get(f"{serve_url}/ask", params={"prompt": " "}, timeout=60)
    assert r.status_code == 422


def test_where_serve_listens_is_read_from_its_controller(serve_url):
    """What each replica's start-up warning is given (api/ray_serve.py: build): Serve's own http_options, read
    from the running controller (here from the driver; a replica asks the same actor)."""
    from api.ray_serve import serve_http_address

    assert serve_http_address() == ("127.0.0.1", int(serve_url.rsplit(":", 1)[1]))
