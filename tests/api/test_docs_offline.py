"""/docs and /redoc render in a real browser with the network off (api/docs.py).

The gateway runs as ``./medgpt.sh up`` runs it (uvicorn, ``api.main:create_app --factory``, loopback), with one
configured model whose weights do not exist: the real app and the real llama.cpp engine, but no model is ever
loaded, since the pages need only ``/openapi.json``. Debian's ``chromium`` loads the pages headless with every
non-loopback request sent to a recording proxy on loopback that refuses it (so nothing reaches the internet even
on a connected machine, and every attempt is seen), and ``--dump-dom`` gives the rendered page.

A control run loads FastAPI's stock pages (CDN assets) over the same schema under the same flags: they must stay
blank and their CDN requests must be seen by the proxy, which proves the flags block the network and the
recorder sees what a page asks for.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
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


#: Chromium itself (not the page) calls these on any page, about:blank included: network time, account and
#: search-engine preconnects. They go to the recording proxy and are refused like everything else, but are not
#: counted as the page's requests. googleapis.com is not here: Google Fonts (fonts.googleapis.com) is a page's.
BROWSER_OWN = re.compile(r"(^|\.)google\.com$")


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

    def page_hosts(self) -> set[str]:
        return {h for h in self.hosts if not BROWSER_OWN.search(h)}

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
    off, and the hosts the page tried to reach off loopback."""
    browser = need_chromium()
    with RecordingProxy() as proxy:
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", "--no-first-run", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
             "--disable-features=AutofillServerCommunication,OptimizationHints,Translate,MediaRouter",
             # the network off: every request goes to the refusing proxy, and no name but 127.0.0.1 resolves
             f"--proxy-server={proxy.address}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--virtual-time-budget=20000", "--dump-dom", url],
            check=False, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout, proxy.page_hosts()


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
