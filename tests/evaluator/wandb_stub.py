"""A loopback STUB of W&B for tests only: W&B's cloud cannot be reached from our machines (and a test must
never send anything there). It answers what the real ``weave`` client asks of W&B's GraphQL API (the project,
the viewer) and of the Weave trace server (``/server_info``, object, table and file uploads, calls, feedback),
and keeps every request, so a test can read exactly what Weave would have uploaded. It also answers an OpenAI
chat completion (``/v1/chat/completions``), so a test can make a real ``openai`` client call while Weave is
on.
"""

from __future__ import annotations

import hashlib
import json

from tests._net import LoopbackServer

CHAT_COMPLETION = {
    "id": "chatcmpl-stub",
    "object": "chat.completion",
    "created": 0,
    "model": "stub",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:32]


def _graphql(query: str) -> dict:
    if "project(" in query:
        return {"data": {"project": {"name": "medgpt", "id": "p", "entity": {"name": "team"}}}}
    if "viewer" in query:
        return {"data": {"viewer": {"username": "tester", "defaultEntity": {"name": "team"}}}}
    return {"data": {}}


def _answer(method: str, path: str, headers: dict, body: bytes):
    if path == "/graphql":
        return 200, {}, _graphql(json.loads(body)["query"])
    if path == "/server_info":
        return 200, {}, {"min_required_weave_python_version": "0.0.1", "trace_server_version": "1.0.0"}
    if path in ("/obj/create", "/file/create"):
        return 200, {}, {"digest": _digest(body)}
    if path == "/table/create":
        rows = json.loads(body)["table"]["rows"]
        return (
            200,
            {},
            {"digest": _digest(body), "row_digests": [_digest(json.dumps(r).encode()) for r in rows]},
        )
    if path.endswith("/chat/completions"):
        return 200, {}, CHAT_COMPLETION
    return 200, {}, {}


class WandbStub(LoopbackServer):
    def __init__(self):
        super().__init__(_answer)

    def uploaded(self) -> str:
        """Every request body W&B / Weave was sent, as one text (what a search for a leaked value must scan);
        the OpenAI requests this stub also answers are not part of it."""
        return "\n".join(
            body.decode("utf-8", "replace")
            for _, path, body in self.requests
            if path != "/graphql" and not path.endswith("/chat/completions")
        )

    def calls(self) -> list[dict]:
        """The Weave calls (ops) started or completed, as the trace server received them."""
        out = []
        for _, path, body in self.requests:
            if path.endswith("/calls/complete"):
                out += json.loads(body)["batch"]
            elif path.endswith("/call/start"):
                out.append(json.loads(body)["start"])
        return out
