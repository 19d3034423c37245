"""Per-client rate limits on the real app (real llama.cpp engine and GGUF for the generated tokens): requests per
minute and generated tokens per minute, each → 429 with an integer Retry-After; other clients unaffected; a limit
of 0 is off; counters belong to the app."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.ratelimit import RateLimiter, Refused
from api.security import digest
from medgpt.settings import ApiKey, AuthSettings, RateLimits, Settings
from tests.api.test_ask import _events
from tests.conftest import MCQ

KEYS = {"clinic-a": "rl-key-a-5d1f0c2b9e", "clinic-b": "rl-key-b-a81e77f3c0"}


def headers(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def limited_app(settings: Settings, engine, requests: int = 0, tokens: int = 0, keys: bool = True):
    auth = AuthSettings(required=keys, keys=[ApiKey(name=n, sha256=digest(k)) for n, k in KEYS.items()])
    s = settings.model_copy(update={
        "auth": auth, "rate_limits": RateLimits(requests_per_minute=requests, tokens_per_minute=tokens),
    })  # fmt: skip
    return create_app(s, engine)


def assert_429(r, detail_part: str) -> int:
    assert r.status_code == 429, r.text
    assert detail_part in r.json()["detail"]
    wait = r.headers["retry-after"]
    assert wait.isdigit() and 0 < int(wait) <= 60  # a whole number of seconds within the one-minute window
    return int(wait)


def test_request_limit_per_key(settings, engine, caplog):
    c = TestClient(limited_app(settings, engine, requests=3))
    for _ in range(3):
        assert c.get("/models", headers=headers("clinic-a")).status_code == 200
    with caplog.at_level(logging.WARNING, logger="medgpt.api"):
        r = c.get("/models", headers=headers("clinic-a"))
    assert_429(r, "3 requests per minute")
    # logged under the key's name, never the key
    assert any("clinic-a" in m.getMessage() for m in caplog.records if m.getMessage().startswith("429"))
    assert not any(KEYS["clinic-a"] in m.getMessage() for m in caplog.records)
    # every rate-limited route shares the count: /ask is refused too, before any work
    assert_429(c.post("/ask", json={**MCQ, "max_tokens": 8}, headers=headers("clinic-a")), "requests per minute")
    # another key has its own window; routes without a key are not limited
    assert c.get("/models", headers=headers("clinic-b")).status_code == 200
    assert c.get("/health").status_code == 200


def test_request_limit_per_address_with_keys_off(settings, engine):
    app = limited_app(settings, engine, requests=2, keys=False)
    first, second = TestClient(app, client=("10.0.0.1", 5000)), TestClient(app, client=("10.0.0.2", 5000))
    assert [first.get("/models").status_code for _ in range(2)] == [200, 200]
    assert_429(first.get("/models"), "2 requests per minute")
    assert second.get("/models").status_code == 200


def test_counters_belong_to_the_app(settings, engine):
    """Two apps in one process (two gateways) do not share counters, and 0 switches a limit off."""
    one, two = (TestClient(limited_app(settings, engine, requests=1)) for _ in range(2))
    assert one.get("/models", headers=headers("clinic-a")).status_code == 200
    assert_429(one.get("/models", headers=headers("clinic-a")), "requests per minute")
    assert two.get("/models", headers=headers("clinic-a")).status_code == 200
    off = TestClient(limited_app(settings, engine, requests=0, tokens=0))
    assert all(off.get("/models", headers=headers("clinic-a")).status_code == 200 for _ in range(5))


def test_token_limit_after_an_answer_used_the_budget(settings, engine):
    with TestClient(limited_app(settings, engine, tokens=1)) as c:
        r = c.post("/ask", json={**MCQ, "max_tokens": 8}, headers=headers("clinic-a"))
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] >= 1  # the budget of 1 is used up
        wait = assert_429(c.post("/ask", json={**MCQ, "max_tokens": 8}, headers=headers("clinic-a")),
                          "1 generated tokens per minute")  # fmt: skip
        assert wait >= 50  # the token window opened with that answer, a moment ago
        assert_429(c.get("/models", headers=headers("clinic-a")), "generated tokens")
        # the other key still has its budget
        assert c.get("/models", headers=headers("clinic-b")).status_code == 200


def test_streamed_answer_is_charged_when_its_result_is_sent(settings, engine):
    with TestClient(limited_app(settings, engine, tokens=1)) as c:
        r = c.post("/ask", json={**MCQ, "max_tokens": 8, "stream": True}, headers=headers("clinic-b"))
        assert r.status_code == 200, r.text
        results = [data for event, data in _events(r.text) if event == "result"]
        assert len(results) == 1 and results[0]["usage"]["completion_tokens"] >= 1
        assert_429(c.get("/models", headers=headers("clinic-b")), "generated tokens")
        assert c.get("/models", headers=headers("clinic-a")).status_code == 200


def test_one_long_answer_counts_in_full():
    """An answer past the remaining budget is charged in full (not capped, not dropped), so the client waits out
    the window; a client is refused on its tokens before its request is counted."""
    limiter = RateLimiter(RateLimits(requests_per_minute=0, tokens_per_minute=5))
    limiter.charge("clinic-a", 7)  # one long answer: all of it counts, past the budget
    with pytest.raises(Refused, match="5 generated tokens per minute") as refused:
        limiter.admit("clinic-a")
    assert 0 < refused.value.retry_after <= 60
    limiter.admit("clinic-b")


def test_schema_documents_the_429(settings, engine):
    spec = TestClient(limited_app(settings, engine, requests=5)).get("/openapi.json").json()
    for path, method in (("/ask", "post"), ("/ask", "get"), ("/summarize", "post"), ("/models", "get")):
        assert "429" in spec["paths"][path][method]["responses"], (path, method)
    assert "429" not in spec["paths"]["/health"]["get"]["responses"]


# --- the client address behind proxies (issue 21) -------------------------------------------------------------------


def _served_by_medgpt_sh(gguf_path, extra_env: dict[str, str]):
    """The real gateway, started by uvicorn with exactly the flags ``medgpt.sh up`` gives it (read from the
    script), keys off, 3 requests a minute; yields its URL."""
    import contextlib
    import os
    import subprocess

    from tests._net import free_port, stop, wait_for_http
    from tests.api.test_phi_logs import ROOT, medgpt_sh_command

    @contextlib.contextmanager
    def served():
        env = {**os.environ, "MEDGPT_AUTH__REQUIRED": "false", "MEDGPT_RATE_LIMITS__REQUESTS_PER_MINUTE": "3",
               "MEDGPT_RATE_LIMITS__TOKENS_PER_MINUTE": "0", "OMP_WAIT_POLICY": "PASSIVE", **extra_env}  # fmt: skip
        env.pop("FORWARDED_ALLOW_IPS", None)  # uvicorn's own variable: the gateway's setting decides
        port = free_port()
        proc = subprocess.Popen(medgpt_sh_command(port, env), cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_for_http(f"http://127.0.0.1:{port}/health", proc, timeout=300)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(proc)

    return served()


def _statuses(url: str, n: int = 5) -> list[int]:
    import httpx

    return [httpx.get(f"{url}/models", headers={"X-Forwarded-For": f"203.0.113.{i}"}, timeout=60).status_code
            for i in range(n)]  # fmt: skip


def test_a_rotating_x_forwarded_for_does_not_reset_the_counter(gguf_path):
    """With keys off a client is its address; uvicorn trusts X-Forwarded-For from 127.0.0.1 by default, so a
    local client could name a new address on each request and never be limited. ``medgpt.sh`` starts uvicorn
    trusting no proxy unless ``forwarded_allow_ips`` says so: the 4th request is a 429 whatever the header says."""
    with _served_by_medgpt_sh(gguf_path, {"MEDGPT_FORWARDED_ALLOW_IPS": ""}) as url:
        assert _statuses(url) == [200, 200, 200, 429, 429]


def test_a_configured_proxy_names_the_client(gguf_path):
    """Behind a proxy that is configured as trusted, X-Forwarded-For is the client: each address has its own
    counter."""
    with _served_by_medgpt_sh(gguf_path, {"MEDGPT_FORWARDED_ALLOW_IPS": "127.0.0.1"}) as url:
        assert _statuses(url) == [200] * 5


def _image_cmd_args(dockerfile_text: str, tmp_path, forwarded: str) -> tuple[int, list[str]]:
    """Runs the image's CMD (its ``sh -c`` line) here with a stand-in ``uvicorn`` that prints its arguments:
    the exit status and the arguments uvicorn would get."""
    import json
    import os
    import subprocess
    import sys

    from tests.api.test_phi_logs import ROOT

    cmd = json.loads(next(x for x in dockerfile_text.splitlines() if x.startswith("CMD"))[len("CMD"):])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "uvicorn").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (bin_dir / "uvicorn").chmod(0o755)
    if not (bin_dir / "python").exists():
        (bin_dir / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MEDGPT_HOST": "0.0.0.0",
           "MEDGPT_FORWARDED_ALLOW_IPS": forwarded}  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, done.stdout.splitlines()


def test_the_image_passes_the_proxy_setting_to_uvicorn(tmp_path):
    from tests.api.test_phi_logs import ROOT

    text = (ROOT / "docker" / "gateway.Dockerfile").read_text()
    rc, args = _image_cmd_args(text, tmp_path, "")
    assert rc == 0 and args[-1] == "--no-proxy-headers" and "--no-access-log" in args
    rc, args = _image_cmd_args(text, tmp_path, "10.0.0.0/8, 172.17.0.1")
    assert rc == 0 and args[-1] == "--forwarded-allow-ips=10.0.0.0/8,172.17.0.1"
    rc, args = _image_cmd_args(text, tmp_path, "*")  # not an address: the start stops, uvicorn never runs
    assert rc != 0 and args == []
