"""One path for both answers: collect a task's stream into JSON, or forward it as Server-Sent Events.

The stream is primed (its first item awaited) before the response starts, so an unknown model, an engine that is
down or a prompt too long still get their proper status code instead of a 200 followed by an error event.

Every outcome is counted here, where the gateway gets it: the finish reason and the guards that fired
(``medgpt_finish_total``, ``medgpt_guard_total``), and an answer refused as an echo (finish reason ``echo``).
A stream's tokens are sent as the model writes them; when the loop guard cuts a generation, the tokens of the loop
sent before it fired stay sent, and the final ``result`` event carries the trimmed text.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel
from sse_starlette.sse import EventSourceResponse

from api.errors import engine_error_status
from api.observability import count_result, log_generation
from api.ratelimit import charge_tokens
from medgpt.engines import EngineError
from medgpt.tasks import EchoedPrompt, Token, collect


def _finished(result: Any, to_response: Callable[[Any], BaseModel]) -> BaseModel:
    """The response for a task result, logged and counted (counts and reasons only, never text)."""
    log_generation(result.model, result.usage.prompt_tokens, result.usage.completion_tokens, result.seconds)
    charge_tokens(result.usage.completion_tokens)  # to the client's tokens per minute
    response = to_response(result)
    # /ask responses name their mode; /summarize ones have one mode only.
    count_result(getattr(response, "mode", "summarize"), result.finish_reason, result.guards)
    return response


def _refused(exc: EngineError) -> None:
    if isinstance(exc, EchoedPrompt):
        count_result(exc.mode, "echo", exc.guards)


async def respond(
    stream: AsyncIterator[Any], to_response: Callable[[Any], BaseModel], streaming: bool
) -> BaseModel | EventSourceResponse:
    try:
        if not streaming:
            return _finished(await collect(stream), to_response)
        first = await anext(stream)
    except EngineError as exc:
        _refused(exc)
        raise

    async def events() -> AsyncIterator[dict[str, str]]:
        item = first
        try:
            while True:
                if isinstance(item, Token):
                    yield {"event": "token", "data": json.dumps({"text": item.text, "stage": item.stage})}
                else:
                    yield {"event": "result", "data": _finished(item, to_response).model_dump_json()}
                item = await anext(stream)
        except StopAsyncIteration:
            return
        except EngineError as exc:  # after the 200 is sent, an error can only be an event
            _refused(exc)
            status, _ = engine_error_status(exc)
            yield {"event": "error", "data": json.dumps({"status": status, "detail": str(exc)})}
        finally:
            await stream.aclose()

    return EventSourceResponse(events(), ping=15)
