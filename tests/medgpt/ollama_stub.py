"""A loopback STUB of an Ollama server, for tests only: no Ollama server can be installed on our machines.

It speaks the documented shapes of ``/api/tags``, ``/api/chat`` and ``/api/generate`` (NDJSON streams, ``done``
objects with ``prompt_eval_count``/``eval_count``) and records each request body so tests can check what the
engine sent (``options.num_ctx``, ``format``). Replies are scripted per test.

Two behaviours of a real Ollama server are imitated on request, for the engine's defences against them:

- ``truncate=True``: a prompt longer than ``options.num_ctx`` (counted here as one token per UTF-8 byte of the
  messages, a stand-in for Ollama's tokenizer) is cut from the front and still answered 200, with
  ``prompt_eval_count`` equal to ``num_ctx``, as Ollama does;
- ``delay_headers`` / ``delay_between``: seconds before the response starts / between streamed pieces (a slow or
  stuck model); the sleeping handler thread ends on its own.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class OllamaStub:
    def __init__(self, replies: list[str], models: tuple[str, ...] = ("medgpt:latest",), *,
                 truncate: bool = False, delay_headers: float = 0.0, delay_between: float = 0.0):  # fmt: skip
        self.replies = list(replies)
        self.models = models
        self.truncate = truncate
        self.delay_headers = delay_headers
        self.delay_between = delay_between
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/api/tags":
                    self._json(200, {"models": [
                        {"model": m, "name": m, "size": 253_000_000, "digest": "0" * 64,
                         "modified_at": "2026-11-01T00:00:00Z",
                         "details": {"format": "gguf", "family": "gemma3", "quantization_level": "Q4_K_M"}}
                        for m in stub.models]})
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                stub.requests.append({"path": self.path, **body})
                name = body.get("model", "")
                if name not in stub.models and f"{name}:latest" not in stub.models:
                    return self._json(404, {"error": f"model '{name}' not found"})
                if self.path not in ("/api/chat", "/api/generate"):
                    return self._json(404, {"error": "not found"})
                probe = body.get("options", {}).get("num_predict") == 1  # the gateway's readiness probe
                text = stub.replies.pop(0) if stub.replies and not probe else "ok"
                prompt = "".join(m.get("content", "") for m in body.get("messages", [])) or body.get("prompt", "")
                prompt_tokens = len(prompt.encode()) + 1
                num_ctx = body.get("options", {}).get("num_ctx", 2048)
                if stub.truncate and prompt_tokens > num_ctx:
                    prompt_tokens = num_ctx  # Ollama drops the front of the prompt and answers anyway
                time.sleep(stub.delay_headers)
                self.send_response(200)
                self.send_header("content-type", "application/x-ndjson")
                self.end_headers()
                words = text.split(" ")
                for i, word in enumerate(words):
                    if i:
                        time.sleep(stub.delay_between)
                    piece = word if i == 0 else " " + word
                    part = {"model": name, "created_at": "2026-11-01T00:00:00Z", "done": False}
                    if self.path == "/api/chat":
                        part["message"] = {"role": "assistant", "content": piece}
                    else:
                        part["response"] = piece
                    try:
                        self.wfile.write((json.dumps(part) + "\n").encode())
                        self.wfile.flush()
                    except OSError:  # the client gave up (a deadline): stop, as Ollama does
                        return
                final = {"model": name, "created_at": "2026-11-01T00:00:00Z", "done": True, "done_reason": "stop",
                         "prompt_eval_count": prompt_tokens if stub.truncate else 42, "eval_count": len(words)}
                if self.path == "/api/chat":
                    final["message"] = {"role": "assistant", "content": ""}
                try:
                    self.wfile.write((json.dumps(final) + "\n").encode())
                except OSError:
                    return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
