"""/docs and /redoc render in a real browser with the network off (api/docs.py).

The gateway runs as ``./medgpt.sh up`` runs it (uvicorn, ``api.main:create_app --factory``, loopback), with one
configured model whose weights do not exist: the real app and the real llama.cpp engine, but no model is ever
loaded, since the pages need only ``/openapi.json``. Debian's ``chromium`` loads the pages headless with every
non-loopback request sent to a recording proxy on loopback that refuses it (so nothing reaches the internet even
on a connected machine, and every attempt is seen), and ``--dump-dom`` gives the rendered page.

A control run loads FastAPI's stock pages (CDN assets) over the same schema under the same flags: they must stay
blank and their CDN requests must be seen by the proxy, which proves the flags block the network and the
recorder sees what a page asks for. A quiet run keeps a blank page open for a while under the same flags: the
proxy must see nothing at all, which proves the browser's own background traffic is off (``QUIET_BROWSER_FLAGS``),
so every host a docs page's run records is the page's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

from medgpt.settings import project_root
from tests._net import LoopbackServer, free_port, stop, wait_for_http

#: a real server and a browser: not in the fast tier
pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def need_chromium() -> str:
    """The browser's path; the browser tests skip without it (the served-HTML test still runs)."""
    if CHROMIUM is None:
        why = (
            "Debian's chromium is not installed (./medgpt.sh test installs it with apt-get when run as root)"
        )
        if os.environ.get("MEDGPT_REQUIRE_CHROMIUM") == "1":  # CI can demand it: a skip would hide the gap
            pytest.fail(why + " and MEDGPT_REQUIRE_CHROMIUM=1")
        pytest.skip(why)
    return CHROMIUM


#: Where Chromium sends its own requests that cannot be switched off, only pointed elsewhere: 127.0.0.1:9, the
#: discard port, which is on Chromium's list of unsafe ports, so the request ends at once with ERR_UNSAFE_PORT
#: without a connection being tried (and loopback never goes through the proxy).
NOWHERE = "http://127.0.0.1:9"

#: The Chromium features whose requests Chromium makes on its own, each with what it calls.
DISABLED_FEATURES = [
    "AutofillServerCommunication",  # autofill field-type queries (content-autofill.googleapis.com)
    "OptimizationHints",  # page hints and models (optimizationguide-pa.googleapis.com)
    "Translate",  # the translate script and language lists (translate.googleapis.com)
    "MediaRouter",  # Cast device discovery
    "NetworkTimeServiceQuerying",  # the secure network-time fetch (clients2.google.com/time/1/current)
    "PreconnectToSearch",  # the startup preconnect to the default search engine (www.google.com)
    "AimServerRequestOnStartupEnabled",  # the omnibox AI-mode eligibility check (www.google.com/async/folae)
]

#: The browser's own background traffic off, so that everything the recording proxy sees is the page's (no host is
#: let off as "the browser's": a request the proxy records fails the test). Each group says what it stops; the
#: last three features and the NOWHERE switches stop what Debian's Chromium 150 or 156 was seen to call on a blank
#: page without them. test_browser_alone_stays_quiet proves the set is enough on the installed browser.
QUIET_BROWSER_FLAGS = [
    # no first-run, sign-in or sync setup, and no default-app or default-browser checks
    "--no-first-run", "--no-default-browser-check", "--disable-sync", "--disable-default-apps",
    # the background services that fetch on their own (variations seed, safe-browsing lists, CRLSets and the
    # other component and extension update checks)
    "--disable-background-networking", "--disable-component-update",
    # Chromium takes one --disable-features (the last one wins), so all of DISABLED_FEATURES are in this one
    f"--disable-features={','.join(DISABLED_FEATURES)}",
    # No switch or feature was found that turns these off (sign-in, incognito and the AI-mode features were
    # tried), so they go NOWHERE:
    #   the GAIA cookie-jar check at startup, made since Debian's launcher gives the browser Google API keys
    #   (accounts.google.com/ListAccounts)
    f"--gaia-url={NOWHERE}",
    #   the component updater: Chromium 156 installs the "Optimization Guide On DeviceModels Manifest" component
    #   (ceofaddefefcbblgcgnibnonglccbfja) on demand, which --disable-component-update does not stop
    #   (update.googleapis.com/service/update2/json)
    f"--component-updater=url-source={NOWHERE}",
    #   the GCM (push messaging) device check-in a few seconds after start (android.clients.google.com/checkin);
    #   it fails, so no GCM registration or connection follows
    f"--gcm-checkin-url={NOWHERE}/checkin",
]  # fmt: skip


class RecordingProxy:
    """An HTTP proxy on 127.0.0.1 that records the host of every request the browser sends it (CONNECT for
    https, absolute URLs for http) and refuses each with 502: the browser's only way off loopback."""

    def __init__(self):
        self.hosts: list[str] = []
        lock, hosts = threading.Lock(), self.hosts

        class _Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _refuse(self):
                target = self.path.split("://", 1)[-1].split("/", 1)[0]
                with lock:
                    hosts.append(target.rsplit(":", 1)[0] if ":" in target else target)
                self.send_response(502)
                self.send_header("content-length", "0")
                self.end_headers()

            do_CONNECT = do_GET = do_POST = do_HEAD = do_OPTIONS = _refuse

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"

    def seen(self) -> set[str]:
        return set(self.hosts)

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def gateway_url():
    """The gateway under uvicorn on loopback; its one model has no weights, so nothing is loaded."""
    port = free_port()
    env = {
        **os.environ,
        "MEDGPT_MODELS": '[{"name": "docs-only", "path": "models/does-not-exist.gguf"}]',
        "MEDGPT_DEFAULT_MODEL": "docs-only",
        "MEDGPT_ENGINE": "llamacpp",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port)],
        cwd=project_root(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/openapi.json", proc, timeout=120)
        yield url
    finally:
        stop(proc)


def render(url: str, tmp_path: Path) -> tuple[str, set[str]]:
    """The DOM of ``url`` after up to 20 s of the page's (virtual) time in headless Chromium with the network
    off and its own background traffic off, and every host the browser tried to reach off loopback."""
    browser = need_chromium()
    with RecordingProxy() as proxy:
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", *QUIET_BROWSER_FLAGS,
             # the network off: every request goes to the refusing proxy, and no name but 127.0.0.1 resolves
             f"--proxy-server={proxy.address}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--virtual-time-budget=20000", "--dump-dom", url],
            check=False, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout, proxy.seen()


class _Refs(HTMLParser):
    """Every URL an HTML page makes the browser load: script src, link href, img src."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in {"script": ("src",), "link": ("href",), "img": ("src",)}.get(tag, ()):
            if attrs.get(name):
                self.urls.append(attrs[name])


def loaded_urls(html: str) -> list[str]:
    parser = _Refs()
    parser.feed(html)
    return parser.urls


def swagger_paths(dom: str) -> set[str]:
    """The paths of the operations Swagger UI rendered (one ``opblock-summary-path`` per operation)."""
    return set(re.findall(r'class="opblock-summary-path"[^>]*data-path="([^"]+)"', dom))


def redoc_operations(dom: str) -> set[tuple[str, str]]:
    """(method, path) of the operations ReDoc rendered: the verb badge and path of each endpoint panel."""
    return set(re.findall(r'http-verb (\w+)">\w+</span><span[^>]*>([^<]+)</span>', dom))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_page_loads_only_from_the_gateway(gateway_url: str, page: str):
    response = httpx.get(gateway_url + page)
    assert response.status_code == 200
    urls = loaded_urls(response.text)
    assert any(u.endswith((".js",)) for u in urls), urls  # the bundle is there, served by the gateway
    assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "https://" not in response.text and "http://" not in response.text
    assert "default-src 'self'" in response.headers["content-security-policy"]
    for url in urls:
        asset = httpx.get(gateway_url + url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url


def test_swagger_ui_renders_offline(gateway_url: str, tmp_path: Path):
    dom, off_loopback = render(f"{gateway_url}/docs", tmp_path)
    assert {"/ask", "/summarize"} <= swagger_paths(dom), dom[-2000:]
    assert off_loopback == set()
    assert all(u.startswith("/") for u in loaded_urls(dom))


def test_redoc_renders_offline(gateway_url: str, tmp_path: Path):
    dom, off_loopback = render(f"{gateway_url}/redoc", tmp_path)
    assert {("post", "/ask"), ("post", "/summarize")} <= redoc_operations(dom), dom[-2000:]
    # ReDoc's sidebar adds a logo <img> from cdn.redoc.ly; the page's Content-Security-Policy stops the request
    assert off_loopback == set()
    assert "fonts.googleapis.com" not in dom


def test_fastapi_stock_pages_stay_blank_under_the_same_flags(gateway_url: str, tmp_path: Path):
    """The control: FastAPI's default CDN pages over the same schema, served on loopback, render nothing, and
    the proxy sees their CDN requests. Without this, a passing render could mean the network was not off."""
    schema = httpx.get(f"{gateway_url}/openapi.json").content
    pages = {
        "/docs": get_swagger_ui_html(openapi_url="/openapi.json", title="stock").body,
        "/redoc": get_redoc_html(openapi_url="/openapi.json", title="stock").body,
    }

    def handle(method, path, headers, body):
        if path == "/openapi.json":
            return 200, {"content-type": "application/json"}, schema
        return 200, {"content-type": "text/html; charset=utf-8"}, pages[path]

    with LoopbackServer(handle) as stock:
        swagger_dom, swagger_hosts = render(f"{stock.url}/docs", tmp_path)
        redoc_dom, redoc_hosts = render(f"{stock.url}/redoc", tmp_path)
    assert swagger_paths(swagger_dom) == set()
    assert redoc_operations(redoc_dom) == set()
    assert "cdn.jsdelivr.net" in swagger_hosts
    assert {"cdn.jsdelivr.net", "fonts.googleapis.com"} <= redoc_hosts


#: How long the quiet run keeps the browser up, in real seconds: the background fetches above all start within a
#: few seconds of launch (the GCM check-in, the latest, comes a few seconds in), and a docs page's run is shorter.
QUIET_WAIT_S = 10


def test_browser_alone_stays_quiet(tmp_path: Path):
    """The browser on a blank page, under the docs runs' flags and for longer than a docs run lasts, asks for no
    host off loopback: with QUIET_BROWSER_FLAGS every host a render records is the page's. The page is held
    back for QUIET_WAIT_S real seconds, since virtual time would end a data: page's run before the browser's
    own timers fire."""
    blank = b"<!doctype html><title>blank</title><p>blank</p>"

    def handle(method, path, headers, body):
        if path == "/":
            time.sleep(QUIET_WAIT_S)
            return 200, {"content-type": "text/html; charset=utf-8"}, blank
        return 404, {"content-type": "text/plain"}, b""  # /favicon.ico

    with LoopbackServer(handle) as page:
        started = time.monotonic()
        dom, hosts = render(f"{page.url}/", tmp_path)
        lasted = time.monotonic() - started
    assert "<p>blank</p>" in dom, dom[-2000:]
    assert lasted >= QUIET_WAIT_S
    assert hosts == set()
