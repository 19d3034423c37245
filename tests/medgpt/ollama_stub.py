"""A loopback STUB of an Ollama server, for tests only: no Ollama server can be installed on our machines.

It speaks the documented shapes of ``/api/tags``, ``/api/chat`` and ``/api/generate`` (NDJSON streams, ``done``
objects with ``prompt_eval_count``/``eval_count``) and records each request body so tests can check what the
engine sent (``options.num_ctx``, ``format``). Replies are scripted per test.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class OllamaStub:
    def __init__(self, replies: list[str], models: tuple[str, ...] = ("medgpt:latest",)):
        self.replies = list(replies)
        self.models = models
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
                self.send_response(200)
                self.send_header("content-type", "application/x-ndjson")
                self.end_headers()
                words = text.split(" ")
                for i, word in enumerate(words):
                    piece = word if i == 0 else " " + word
                    part = {"model": name, "created_at": "2026-11-01T00:00:00Z", "done": False}
                    if self.path == "/api/chat":
                        part["message"] = {"role": "assistant", "content": piece}
                    else:
                        part["response"] = piece
                    self.wfile.write((json.dumps(part) + "\n").encode())
                final = {"model": name, "created_at": "2026-11-01T00:00:00Z", "done": True, "done_reason": "stop",
                         "prompt_eval_count": 42, "eval_count": len(words)}
                if self.path == "/api/chat":
                    final["message"] = {"role": "assistant", "content": ""}
                self.wfile.write((json.dumps(final) + "\n").encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> OllamaStub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
