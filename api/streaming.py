"""One path for both answers: collect a task's stream into JSON, or forward it as Server-Sent Events.

The stream is primed (its first item awaited) before the response starts, so an unknown model, an engine that is
down or a prompt too long still get their proper status code instead of a 200 followed by an error event.

Every outcome is counted here, where the gateway gets it: the finish reason and the guards that fired
(``medgpt_finish_total``, ``medgpt_guard_total``), and an answer refused as an echo (finish reason ``echo``).
A stream's tokens are sent as the model writes them; when the loop guard cuts a generation, the tokens of the loop
sent before it fired stay sent, and the final ``result`` event carries the trimmed text.

Every answer holds a turn of the engine's admission queue (:mod:`medgpt.admission`) for its whole run, so a
busy engine refuses at once (503 + Retry-After) instead of parking requests until they time out. A client that
disconnects stops its work: closing the task stream stops the engine within a token, for a stream (the response
closes it) and for a JSON answer alike (the disconnect is watched while the answer is collected).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel
from sse_starlette.sse import EventSourceResponse
from starlette.background import BackgroundTask

from api.deps import get_gateway
from api.errors import client_message, engine_error_status
from api.observability import (
    count_queue_refused,
    count_result,
    log_generation,
    observe_queue_wait,
    request_id,
)
from api.ratelimit import charge_tokens
from medgpt.admission import Slot
from medgpt.engines import EngineError, Overloaded
from medgpt.tasks import EchoedPrompt, Token, collect

log = logging.getLogger("medgpt.api")

#: The 200 of a route that takes ``stream: true``, for the schema: the JSON answer, or Server-Sent Events.
STREAMED = {
    200: {
        "description": "The answer as JSON; with `stream: true`, Server-Sent Events: `token` events as the model "
        "writes, then one `result` event (the JSON answer) or one `error` event.",
        # each event's data is a JSON object: {text, stage}, the answer, or {status, detail}
        "content": {"text/event-stream": {"schema": {"type": "object"}}},
    }
}


def _finished(result: Any, to_response: Callable[[Any], BaseModel]) -> BaseModel:
    """The response for a task result, logged and counted (counts and reasons only, never text)."""
    log_generation(result.model, result.usage.prompt_tokens, result.usage.completion_tokens, result.seconds)
    charge_tokens(result.usage.completion_tokens)  # to the client's tokens per minute
    response = to_response(result)
    # /ask responses name their mode; /summarize ones have one mode only.
    count_result(getattr(response, "mode", "summarize"), result.finish_reason, result.guards)
    return response


class Events:
    """How a stream's items become Server-Sent Events; this one is MedGPT's own format (``token`` events, one
    ``result`` event, an ``error`` event). Another wire format (OpenAI's chunks: ``api/routes/openai_v1.py``)
    overrides the three methods; each returns the events to send, in order."""

    def token(self, token: Token) -> list[dict[str, str]]:
        return [{"event": "token", "data": json.dumps({"text": token.text, "stage": token.stage})}]

    def result(self, response: BaseModel) -> list[dict[str, str]]:
        return [{"event": "result", "data": response.model_dump_json()}]

    def error(self, exc: EngineError, status: int, detail: str) -> list[dict[str, str]]:
        return [{"event": "error", "data": json.dumps({"status": status, "detail": detail})}]


def _refused(exc: EngineError) -> None:
    if isinstance(exc, EchoedPrompt):
        count_result(exc.mode, "echo", exc.guards)


async def respond(
    request: Request, stream: AsyncIterator[Any], to_response: Callable[[Any], BaseModel], streaming: bool,
    events: Events | None = None,
) -> BaseModel | EventSourceResponse | Response:
    """Answer ``request`` with the task ``stream``: a JSON body, or Server-Sent Events when ``streaming``, in
    the format of ``events`` (MedGPT's own when None).

    The request first takes a turn in the engine's admission queue (503 + Retry-After at once when it is full,
    or when the wait would pass the request's deadline) and holds it for its whole run: every chunk of a long
    summary, and a stream until it ends or is closed. Until the response starts, a client that goes away
    stops the work at once: its place in the queue is given up, or the generation is stopped within a token."""
    gateway = get_gateway(request)
    admission = gateway.admission
    deadline = admission.clock() + gateway.settings.limits.request_timeout
    slot: Slot | None = None

    async def start() -> Any:
        nonlocal slot
        try:
            slot = await admission.acquire(deadline)
        except Overloaded:
            count_queue_refused()
            raise
        observe_queue_wait(slot.waited)
        return await (anext(stream) if streaming else collect(stream))

    try:
        outcome = await _unless_client_leaves(request, start())
    except BaseException as exc:
        if isinstance(exc, EngineError):
            _refused(exc)
        await _give_up(stream, slot)
        raise
    if outcome is _CLIENT_GONE:
        await _give_up(stream, slot)
        log.info("%s client disconnected; work stopped", request_id.get())
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    assert slot is not None
    if not streaming:
        slot.release()
        return _finished(outcome, to_response)

    turn = slot
    wire = events or Events()

    async def sse() -> AsyncIterator[dict[str, str]]:
        item = outcome
        served = False
        try:
            while True:
                for event in wire.token(item) if isinstance(item, Token) else wire.result(_finished(item, to_response)):
                    yield event
                item = await anext(stream)
        except StopAsyncIteration:
            served = True
            return
        except EngineError as exc:  # after the 200 is sent, an error can only be an event
            _refused(exc)
            status, _ = engine_error_status(exc)
            for event in wire.error(exc, status, client_message(exc)):
                yield event
        finally:
            try:
                await stream.aclose()
            finally:
                turn.release(served)

    # After the response, whatever happened to it: a stream never started (the client left before the first
    # event) still stops the engine and gives its turn back; after a normal end both are no-ops.
    return EventSourceResponse(sse(), ping=15, background=BackgroundTask(_give_up, stream, turn))


#: The status logged for a request whose client went away before the answer (nginx's "client closed request");
#: nobody receives it.
CLIENT_CLOSED_REQUEST = 499
_CLIENT_GONE = object()


async def _unless_client_leaves(request: Request, work: Awaitable[Any]) -> Any:
    """The result of ``work``, or :data:`_CLIENT_GONE` with ``work`` cancelled as soon as the client disconnects
    (cancelling it closes the task stream, which stops the engine within a token)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    gone = False
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            if watch.exception() is None:
                gone = True
            else:  # a server whose receive cannot be watched: the work runs to its end
                log.debug("cannot watch for a disconnect: %r", watch.exception())
                await asyncio.wait({task})
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return _CLIENT_GONE if gone else task.result()


async def _give_up(stream: AsyncIterator[Any], slot: Slot | None) -> None:
    """Close the task stream (the engine stops within a token) and give the turn back, unserved. Both are
    no-ops when already done."""
    try:
        await stream.aclose()
    except RuntimeError:  # still running inside a task being cancelled: that cancellation closes it
        log.debug("task stream still closing")
    finally:
        if slot is not None:
            slot.release(served=False)


async def _disconnected(request: Request) -> None:
    """Returns when the client has disconnected. The body has been read by now, so what the server hands over
    next is the disconnect; anything else (a GET's empty body) is skipped."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # no busy loop should a server hand over empty bodies
