"""Loopback networking for the tests: a free port, waiting for a server to answer, and a small HTTP server on
127.0.0.1 for the stubs that stand in for services these machines cannot run (each stub says which and
why)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Self
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

#: ``handle(method, path, headers, body) -> (status, headers, body)``; a dict body is sent as JSON.
Handler = Callable[[str, str, dict, bytes], tuple[int, dict, bytes | dict]]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (the OS picks it; it is closed again at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    """Until ``url`` answers 200; fails (AssertionError) when ``proc`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{proc.args[:3]} exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout:.0f} s")


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class LoopbackServer:
    """An HTTP server on 127.0.0.1 (a free port) in a daemon thread, as a context manager; every request goes
    to ``handle``, and its method, path and body are kept in ``requests``."""

    def __init__(self, handle: Handler):
        self.requests: list[tuple[str, str, bytes]] = []
        server = self

        class _Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                server.requests.append((self.command, self.path, body))
                status, headers, out = handle(self.command, self.path, dict(self.headers), body)
                if isinstance(out, dict):
                    out, headers = json.dumps(out).encode(), {"content-type": "application/json", **headers}
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
