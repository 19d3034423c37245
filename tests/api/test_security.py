"""API keys on the real app (real llama.cpp engine and GGUF where an answer is generated): 401 without a valid key
on every protected route, /metrics and GET /ask included; both ways of sending a key; only digests configured;
``python -m api.keys`` round-trips; the start-up warning when listening beyond loopback without keys."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import pytest
import yaml
from fastapi.testclient import TestClient

from api.main import create_app
from api.security import digest
from medgpt.settings import ApiKey, AuthSettings, Limits, Settings
from tests.conftest import MCQ, ROOT

KEY = "test-key-clinic-a-7f3c9a0e5b"
OTHER_KEY = "test-key-clinic-b-11d2e8c4aa"  # valid in form, but its digest is not configured

#: Every protected route, with a request that is valid apart from the key.
PROTECTED = [
    ("POST", "/ask", {"json": {**MCQ, "max_tokens": 8}}),
    ("GET", "/ask", {"params": {"prompt": "What is anemia?", "model": "medgpt"}}),
    ("POST", "/summarize", {"json": {"text": "Chest pain for two hours. ECG normal.", "max_tokens": 8}}),
    ("GET", "/models", {}),
    ("GET", "/metrics", {}),
    ("GET", "/metrics/", {}),
]
IDS = [f"{m} {p}" for m, p, _ in PROTECTED]


def keyed(settings: Settings, keys: list[ApiKey], **updates) -> Settings:
    # default_max_tokens small: GET /ask takes no max_tokens
    return settings.model_copy(update={
        "auth": AuthSettings(required=True, keys=keys),
        "limits": Limits(generation_timeout=900, default_max_tokens=8),
        **updates,
    })  # fmt: skip


@pytest.fixture(scope="module")
def keyed_client(settings, engine):
    app = create_app(keyed(settings, [ApiKey(name="clinic-a", sha256=digest(KEY))]), engine)
    with TestClient(app) as c:
        yield c


def assert_401(r, detail_part: str) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    detail = r.json()["detail"]
    assert detail_part in detail
    assert KEY not in r.text and OTHER_KEY not in r.text


@pytest.mark.parametrize("method,path,kwargs", PROTECTED, ids=IDS)
def test_no_key_is_401(keyed_client, method, path, kwargs):
    assert_401(keyed_client.request(method, path, **kwargs), "API key is required")


@pytest.mark.parametrize("method,path,kwargs", PROTECTED, ids=IDS)
@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_wrong_key_is_401(keyed_client, method, path, kwargs, header):
    value = f"Bearer {OTHER_KEY}" if header == "authorization" else OTHER_KEY
    assert_401(keyed_client.request(method, path, headers={header: value}, **kwargs), "not valid")


def test_a_key_in_another_scheme_or_empty_is_not_accepted(keyed_client):
    assert_401(keyed_client.get("/models", headers={"authorization": f"Basic {KEY}"}), "required")
    assert_401(keyed_client.get("/models", headers={"authorization": "Bearer "}), "required")
    assert_401(keyed_client.get("/models", headers={"x-api-key": ""}), "required")


def test_the_key_comes_before_validation(keyed_client):
    """Without a key the request's fields are not validated: a body of the wrong shape is a 401, not a 422 that
    would describe the schema. (FastAPI decodes the JSON before any dependency runs, so bytes that are not JSON
    at all still get their 422 first; nothing runs for them either way.)"""
    assert_401(keyed_client.post("/ask", json={"question": ""}), "required")
    assert_401(keyed_client.post("/summarize", json={"text": "x", "style": "haiku"}), "required")
    assert_401(keyed_client.get("/ask"), "required")  # no prompt


def test_bearer_key_answers(keyed_client):
    r = keyed_client.post("/ask", json={**MCQ, "max_tokens": 8}, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    assert r.json()["choice"] in MCQ["options"]
    r = keyed_client.get("/metrics", headers={"Authorization": f"bearer {KEY}"}, follow_redirects=True)
    assert r.status_code == 200 and "medgpt_requests_total" in r.text


def test_x_api_key_answers(keyed_client):
    headers = {"X-API-Key": KEY}
    r = keyed_client.get("/ask", params={"prompt": "What is anemia?", "model": "medgpt"}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["mode"] == "open" and r.json()["answer"]
    assert keyed_client.get("/models", headers=headers).status_code == 200
    assert "medgpt_requests_total" in keyed_client.get("/metrics/", headers=headers).text
    # with a key, /summarize reaches validation (no generation needed to show the key was taken)
    r = keyed_client.post("/summarize", json={"text": "   "}, headers=headers)
    assert r.status_code == 422 and "blank" in r.json()["detail"]


def test_refusals_are_counted_and_logged_without_the_key(keyed_client, caplog):
    with caplog.at_level(logging.WARNING, logger="medgpt.api"):
        keyed_client.get("/models", headers={"X-API-Key": OTHER_KEY})
        keyed_client.get("/metrics/", headers={"X-API-Key": OTHER_KEY})
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("401")]
    assert any("/models" in m for m in refusals) and any("/metrics" in m for m in refusals)
    assert not any(OTHER_KEY in r.getMessage() or digest(OTHER_KEY) in r.getMessage() for r in caplog.records)
    metrics = keyed_client.get("/metrics/", headers={"X-API-Key": KEY}).text
    assert re.search(r'medgpt_requests_total\{route="/models",status="401"\} [1-9]', metrics)


def test_health_ready_and_docs_stay_open(keyed_client):
    assert keyed_client.get("/health").status_code == 200
    assert keyed_client.get("/ready").status_code == 200
    assert keyed_client.get("/docs").status_code == 200
    spec = keyed_client.get("/openapi.json")
    assert spec.status_code == 200
    # the schema says how to send a key, and which routes need one
    schemes = spec.json()["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer" and schemes["APIKeyHeader"]["name"] == "X-API-Key"
    paths = spec.json()["paths"]
    assert paths["/ask"]["post"]["security"] and "401" in paths["/ask"]["post"]["responses"]
    assert "security" not in paths["/health"]["get"]


def test_only_digests_are_configured(settings, engine):
    """The config holds digests: a key whose digest is not listed fails, and a listed digest sent as if it were
    the key fails too (it is not the key)."""
    s = keyed(settings, [ApiKey(name="clinic-a", sha256=digest(KEY))])
    with pytest.raises(ValueError):
        ApiKey(name="plain", sha256=KEY)  # a plain key is not a digest: refused by the settings themselves
    c = TestClient(create_app(s, engine))
    assert c.get("/models", headers={"X-API-Key": KEY}).status_code == 200
    assert_401(c.get("/models", headers={"X-API-Key": OTHER_KEY}), "not valid")
    assert_401(c.get("/models", headers={"X-API-Key": digest(KEY)}), "not valid")


def test_keys_required_but_none_configured_refuses_everyone_and_says_so(settings, engine, caplog):
    with caplog.at_level(logging.WARNING, logger="medgpt.api"):
        c = TestClient(create_app(keyed(settings, []), engine))
    assert any("none is configured" in r.getMessage() for r in caplog.records)
    assert_401(c.get("/models", headers={"X-API-Key": KEY}), "not valid")


def test_keys_command_round_trips(settings, engine):
    """``python -m api.keys new`` prints a key and the config lines; those lines let that key in, and ``hash``
    gives the same digest."""
    out = subprocess.run([sys.executable, "-m", "api.keys", "new", "clinic-c"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    key = re.search(r"^ {4}([A-Za-z0-9_-]{43})$", out, re.MULTILINE).group(1)
    lines = re.search(r"^( {4}- name: .*\n {6}sha256: .*\n)", out, re.MULTILINE).group(1)
    entries = yaml.safe_load("keys:\n" + lines)["keys"]
    assert entries == [{"name": "clinic-c", "sha256": digest(key)}]
    assert key not in lines

    hashed = subprocess.run([sys.executable, "-m", "api.keys", "hash"], cwd=ROOT, input=key + "\n",
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert hashed == entries[0]["sha256"]

    c = TestClient(create_app(keyed(settings, [ApiKey(**e) for e in entries]), engine))
    assert c.get("/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert_401(c.get("/models", headers={"Authorization": f"Bearer {key[:-1]}"}), "not valid")

    bad = subprocess.run([sys.executable, "-m", "api.keys", "new", "no spaces"], cwd=ROOT, capture_output=True,
                         text=True, check=False)  # fmt: skip
    assert bad.returncode == 2 and "letters, digits" in bad.stderr


def _exposure_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "KEYS ARE OFF" in r.getMessage()]


@pytest.mark.parametrize("host,required,warned", [
    ("0.0.0.0", False, True),
    ("::", False, True),
    ("gateway.example.org", False, True),
    ("127.0.0.1", False, False),
    ("localhost", False, False),
    ("::1", False, False),
    ("0.0.0.0", True, False),
])  # fmt: skip
def test_startup_warning_beyond_loopback_without_keys(settings, engine, caplog, host, required, warned):
    keys = [ApiKey(name="clinic-a", sha256=digest(KEY))] if required else []
    s = settings.model_copy(update={"host": host, "auth": AuthSettings(required=required, keys=keys)})
    with caplog.at_level(logging.WARNING, logger="medgpt.api"):
        create_app(s, engine)
    assert bool(_exposure_warnings(caplog)) is warned
    if warned:
        assert host in _exposure_warnings(caplog)[0]


def test_shipped_config_is_the_local_dev_default_and_the_image_sets_its_host():
    """config/medgpt.yaml keeps keys off (local development); the image tells the settings it listens on all
    interfaces, so the warning fires there until keys are on; compose publishes on loopback unless told not to."""
    assert Settings().auth.required is False
    dockerfile = (ROOT / "docker" / "gateway.Dockerfile").read_text()
    assert re.search(r"^ENV MEDGPT_HOST=0\.0\.0\.0$", dockerfile, re.MULTILINE)
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert compose["services"]["gateway"]["ports"] == ["${MEDGPT_BIND:-127.0.0.1}:${MEDGPT_PORT:-8000}:8000"]


# --- the start-up warning under Serve: where Serve listens, not MEDGPT_HOST (no Ray started) ---


@pytest.mark.parametrize("serve_host,required,warned", [
    ("0.0.0.0", False, True),             # serve deploy's default (KubeRay's), keys off: warned
    ("::", False, True),
    ("an address Ray Serve did not report", False, True),   # the controller could not be asked: assume the worst
    ("127.0.0.1", False, False),          # config/ray-serve.yaml
    ("0.0.0.0", True, False),             # keys on
])  # fmt: skip
def test_the_replicas_warning_reads_where_serve_listens(settings, engine, caplog, monkeypatch, serve_host, required,
                                                        warned):  # fmt: skip
    """A replica's settings say 127.0.0.1 (MEDGPT_HOST is not where Serve listens): the warning used to read
    them and never fired. The replica's app is built with Serve's http_options host instead."""
    ray_serve = pytest.importorskip("api.ray_serve", reason="Ray Serve is not installed")

    monkeypatch.setattr(ray_serve, "serve_http_address", lambda: (serve_host, 8000))
    keys = [ApiKey(name="clinic-a", sha256=digest(KEY))] if required else []
    replica = settings.model_copy(update={"host": "127.0.0.1", "auth": AuthSettings(required=required, keys=keys)})
    with caplog.at_level("WARNING", logger="medgpt.api"):
        ray_serve.build(replica, engine)
    assert bool(_exposure_warnings(caplog)) is warned
    if warned:
        assert serve_host in _exposure_warnings(caplog)[0]


def test_outside_ray_no_serve_address_is_read_and_ray_is_not_started(settings, engine, caplog):
    ray = pytest.importorskip("ray")
    ray_serve = pytest.importorskip("api.ray_serve", reason="Ray Serve is not installed")

    assert not ray.is_initialized()
    assert ray_serve.serve_http_address() is None
    with caplog.at_level("WARNING", logger="medgpt.api"):
        ray_serve.build(settings.model_copy(update={"host": "127.0.0.1"}), engine)
    assert not ray.is_initialized() and not _exposure_warnings(caplog)
