"""The raw request body is limited before anything parses it: a body over ``limits.max_body_bytes`` is a 413.

A declared ``Content-Length`` over the limit is refused before a byte of the body is read. A body sent without
one (chunked) is counted as it arrives and refused once it passes the limit, so a client cannot make the server
buffer an unbounded body for the JSON parser. Pure ASGI, so it sits in front of FastAPI's body handling.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _detail(limit: int) -> str:
    return f"the request body is over this server's limit of {limit:,} bytes"


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                await JSONResponse({"detail": "Content-Length is not a number"}, 400)(scope, receive, send)
                return
            if too_large:
                await JSONResponse({"detail": _detail(self.max_bytes)}, 413)(scope, receive, send)
                return
        received, over, answered = 0, False, False

        async def counted() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # The app is told the body ended here; whatever it answers (a parse error) is replaced by the
                    # 413 below. Nothing past the limit is read or buffered.
                    over = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def answer(message: Message) -> None:
            nonlocal answered
            if not over:
                await send(message)
            elif message["type"] == "http.response.start" and not answered:
                answered = True
                await JSONResponse({"detail": _detail(self.max_bytes)}, 413)(scope, counted, send)

        await self.app(scope, counted, answer)
