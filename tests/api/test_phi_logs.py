"""Clinical text never reaches the gateway's logs: the real gateway, started by uvicorn in a subprocess the way
``medgpt.sh up`` starts it (its flags read from the script), serves the real GGUF; every line it writes (stdout and
stderr) is kept and searched for a planted note's identifiers. Once more with uvicorn's access log switched on and
DEBUG logging, which the app's own filters must hold against. Plus the filters themselves, and the validation of
``X-Request-ID`` before it is echoed and logged.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from uvicorn.logging import AccessFormatter, DefaultFormatter

from api import logfilter
from medgpt.settings import project_root
from tests._net import free_port, stop, wait_for_http

ROOT = project_root()

#: A fake patient: distinctive tokens that appear nowhere in the code, the model or the config.
NAME = "Zebulon Quixmorton"
MRN = "MRN 48213977"
NOTE = (
    f"Patient {NAME}, {MRN}, seen at Ravenwood Clinic on 03/14/2026. Chief complaint: chest pain for two days, "
    "worse on exertion. History of hypertension. Exam: BP 150/95, HR 88. ECG without acute changes. "
    "Plan: troponin, stress test, start aspirin."
)
PLANTED = ("Zebulon", "Quixmorton", "48213977", "Ravenwood")


def medgpt_sh_command(port: int, env: dict[str, str] | None = None) -> list[str]:
    """The uvicorn command of ``medgpt.sh up``, with its flags, for this interpreter and ``port``; the proxy flag
    the script computes from the settings (``forwarded_allow_ips``) is computed the same way, under ``env``."""
    lines = (ROOT / "medgpt.sh").read_text().splitlines()
    line = next(x for x in lines if "-m uvicorn" in x)
    line = line.split("=(", 1)[-1].rsplit(")", 1)[0] if "=(" in line else line  # a bash array: server=(...)
    words = [w for w in shlex.split(line.rstrip(" \\")) if w != "nohup"]
    values = {"$PY": sys.executable, "$HOST": "127.0.0.1", "$PORT": str(port)}
    flag = next((x for x in lines if x.strip().startswith('proxy_flag="$(')), None)
    if flag is not None:  # proxy_flag="$("$PY" -m ...)": the same command, run here
        inner = [values.get(w, w) for w in shlex.split(flag.split("$(", 1)[1].rsplit(")", 1)[0])]
        done = subprocess.run(inner, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        values["$proxy_flag"] = done.stdout.strip()
    return [values.get(w, w) for w in words]


def test_medgpt_sh_starts_uvicorn_without_its_access_log():
    command = medgpt_sh_command(8000)
    assert command[1:4] == ["-m", "uvicorn", "api.main:create_app"] and "--no-access-log" in command


def test_dockerfile_starts_uvicorn_without_its_access_log_on_medgpt_host():
    cmd = next(x for x in (ROOT / "docker" / "gateway.Dockerfile").read_text().splitlines() if x.startswith("CMD"))
    assert "--no-access-log" in cmd and '--host \\"$MEDGPT_HOST\\"' in cmd and '"sh", "-c"' in cmd


MODES = {
    # exactly what medgpt.sh runs, at the shipped log level
    "medgpt.sh": {"access_log": False, "level": "INFO"},
    # someone turned uvicorn's access log on and logs everything: the app's filters still hold
    "access-log-on-debug": {"access_log": True, "level": "DEBUG"},
}


@pytest.fixture(params=list(MODES), scope="module")
def served(request, gguf_path: Path, tmp_path_factory):
    """The gateway in a subprocess on a loopback port, the shipped config (``medgpt`` with its adapter), answers
    cut short; yields ``(url, mode, log_path, process)``; the test stops the process (which flushes its logs) before
    reading."""
    mode = MODES[request.param]
    port = free_port()
    command = medgpt_sh_command(port)
    if mode["access_log"]:
        command.remove("--no-access-log")
    env = {
        **os.environ,
        "MEDGPT_LOG_LEVEL": mode["level"],
        "MEDGPT_LOG_TEXT": "false",
        "MEDGPT_LIMITS__DEFAULT_MAX_TOKENS": "8",  # GET /ask takes no max_tokens
        "MEDGPT_RATE_LIMITS__REQUESTS_PER_MINUTE": "0",
        "MEDGPT_RATE_LIMITS__TOKENS_PER_MINUTE": "0",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    log_path = tmp_path_factory.mktemp("phi") / f"gateway-{request.param}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{url}/ready", proc, timeout=300)
            yield url, request.param, log_path, proc
        finally:
            if proc.poll() is None:
                stop(proc)


def test_no_clinical_text_in_any_log_line(served):
    url, mode, log_path, proc = served
    sent: list[tuple[str, str, str, int]] = []  # (request id, method, route, status)

    def call(rid: str, method: str, route: str, **kwargs) -> httpx.Response:
        r = http.request(method, f"{url}{route}", headers={"x-request-id": rid}, **kwargs)
        sent.append((rid, method, route, r.status_code))
        return r

    with httpx.Client(timeout=600) as http:
        r = call("phi-get", "GET", "/ask", params={"prompt": f"Does {NAME} ({MRN}) need a stress test?"})
        assert r.status_code in (200, 502), r.text  # 502: the echo guard refused; either way it ran the model
        r = call("phi-note", "POST", "/ask",
                 json={"question": "What is the chief complaint?", "context": NOTE, "max_tokens": 8})  # fmt: skip
        assert r.status_code in (200, 502), r.text
        # the result event carries evidence quoted from the note: this question makes it the name's sentence
        r = call("phi-stream", "POST", "/ask", json={"question": "Who is the patient and what is the MRN?",
                 "context": NOTE, "max_tokens": 8, "stream": True})  # fmt: skip
        assert r.status_code == 200 and "Quixmorton" in r.text, r.text  # the client gets it; the log must not
        r = call("phi-summary", "POST", "/summarize", json={"text": NOTE, "max_tokens": 8})
        assert r.status_code in (200, 502), r.text
        # errors: an unknown model (from the engine), a failed validation, an unknown model on GET
        r = call("phi-404", "POST", "/ask", json={"question": f"{NAME} {MRN}", "context": NOTE, "model": "nope"})
        assert r.status_code == 404, r.text
        r = call("phi-422", "POST", "/ask", json={"question": NOTE, "options": {"A": NAME}})
        assert r.status_code == 422 and NAME not in r.text, r.text
        r = call("phi-get-404", "GET", "/ask", params={"prompt": NOTE, "model": "nope"})
        assert r.status_code == 404, r.text
    stop(proc)  # graceful: uvicorn and the app flush what they log at shutdown
    log = log_path.read_text(errors="replace")

    leaked = [token for token in PLANTED if token.lower() in log.lower()]
    assert not leaked, f"{mode}: planted text {leaked} in the log:\n{log[-4000:]}"
    assert "?prompt" not in log and "prompt=" not in log, log[-4000:]
    # The log is not empty: each request has its line (id, method, route template, status), so this test fails if
    # the request log breaks.
    for rid, method, route, status in sent:
        assert re.search(rf"\b{rid} {method} {route} {status} \d+ms", log), f"{mode}: no line for {rid}:\n{log}"
    if MODES[mode]["access_log"]:  # uvicorn's own lines are there too, without the query string
        assert re.search(r'"GET /ask HTTP/1\.1" (200|502)', log), log[-4000:]
        assert 'DEBUG' in log  # the level really was DEBUG


# --- the filters, on uvicorn's own loggers and formatters --------------------------------------------------------


def _capture(logger_name: str, formatter: logging.Formatter):
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    return out, lambda: (logger.removeHandler(handler), logger.setLevel(old_level))


def test_access_log_filter_drops_the_query_string():
    logfilter.install()
    logfilter.install()  # idempotent: one filter per logger, however many apps a process makes
    assert sum(isinstance(f, logfilter.DropQueryString) for f in logging.getLogger("uvicorn.access").filters) == 1
    out, done = _capture("uvicorn.access", AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s'))
    try:
        access = logging.getLogger("uvicorn.access")
        # exactly the call uvicorn's h11/httptools protocols make when the access log is on
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5555", "GET",
                    f"/ask?prompt={NAME.replace(' ', '%20')}&model=medgpt", "1.1", 200)  # fmt: skip
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5555", "POST", "/summarize", "1.1", 200)
    finally:
        done()
    lines = out.getvalue().splitlines()
    assert lines == ['127.0.0.1:5555 - "GET /ask HTTP/1.1" 200 OK', '127.0.0.1:5555 - "POST /summarize HTTP/1.1" 200 OK']


def test_payload_loggers_write_nothing_at_debug():
    logfilter.install()
    out, done = _capture("sse_starlette.sse", logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("sse_starlette.sse")
    try:
        logger.setLevel(logging.DEBUG)
        logger.debug("chunk: %s", f"data: {NAME}")  # what sse-starlette writes for every event it sends
        logger.warning("a warning stays")
    finally:
        done()
    assert out.getvalue().splitlines() == ["WARNING a warning stays"]
    assert all(any(isinstance(f, logfilter.NoDebug) for f in logging.getLogger(n).filters)
               for n in logfilter.PAYLOAD_LOGGERS)  # fmt: skip


def test_error_log_filter_keeps_the_traceback_but_not_the_messages():
    logfilter.install()
    out, done = _capture("uvicorn.error", DefaultFormatter("%(levelprefix)s %(message)s", use_colors=False))
    try:
        try:
            try:
                raise KeyError(NAME)
            except KeyError as exc:
                raise ValueError(f"bad input {MRN}") from exc
        except ValueError as exc:
            logging.getLogger("uvicorn.error").error("Exception in ASGI application\n", exc_info=exc)
    finally:
        done()
    text = out.getvalue()
    assert "Exception in ASGI application" in text and "Traceback (most recent call last)" in text
    assert "builtins.KeyError" in text and "builtins.ValueError" in text and "test_phi_logs.py" in text
    assert NAME not in text and "48213977" not in text


# --- X-Request-ID ------------------------------------------------------------------------------------------------


async def _asgi_get(app, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """One request straight through the ASGI app (raw header bytes, which an HTTP client would refuse to send);
    returns the response headers."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8000)}  # fmt: skip
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return {k.decode(): v.decode("latin-1") for k, v in start["headers"]}


def test_a_valid_request_id_is_echoed_and_logged(client, caplog):
    with caplog.at_level(logging.INFO, logger="medgpt.api"):
        r = client.get("/health", headers={"x-request-id": "req-2026.11_23"})
    assert r.headers["x-request-id"] == "req-2026.11_23"
    assert any(m.startswith("req-2026.11_23 GET /health 200") for m in caplog.messages), caplog.messages


@pytest.mark.parametrize("bad", [b"a\r\nb", b"x" * 500, b"<script>alert(1)</script>", b"a b", b"", "caf\u00e9".encode()],
                         ids=["crlf", "500-chars", "script", "space", "empty", "non-ascii"])  # fmt: skip
def test_an_invalid_request_id_is_replaced(app, bad, caplog):
    import asyncio

    with caplog.at_level(logging.INFO, logger="medgpt.api"):
        headers = asyncio.run(_asgi_get(app, "/health", [(b"x-request-id", bad)]))
    rid = headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{12}", rid), rid  # a fresh id of the gateway's own
    assert any(m.startswith(f"{rid} GET /health 200") for m in caplog.messages), caplog.messages
    assert not any(bad.decode("latin-1") in m for m in caplog.messages if bad)
