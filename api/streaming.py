"""One path for both answers: collect a task's stream into JSON, or forward it as Server-Sent Events.

The stream is primed (its first item awaited) before the response starts, so an unknown model, an engine that is
down or a prompt too long still get their proper status code instead of a 200 followed by an error event.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel
from sse_starlette.sse import EventSourceResponse

from api.errors import engine_error_status
from api.observability import log_generation
from medgpt.engines import EngineError
from medgpt.tasks import Token, collect


def _logged(result: Any) -> Any:
    log_generation(result.model, result.usage.prompt_tokens, result.usage.completion_tokens, result.seconds)
    return result


async def respond(
    stream: AsyncIterator[Any], to_response: Callable[[Any], BaseModel], streaming: bool
) -> BaseModel | EventSourceResponse:
    if not streaming:
        return to_response(_logged(await collect(stream)))
    first = await anext(stream)

    async def events() -> AsyncIterator[dict[str, str]]:
        item = first
        try:
            while True:
                if isinstance(item, Token):
                    yield {"event": "token", "data": json.dumps({"text": item.text, "stage": item.stage})}
                else:
                    yield {"event": "result", "data": to_response(_logged(item)).model_dump_json()}
                item = await anext(stream)
        except StopAsyncIteration:
            return
        except EngineError as exc:  # after the 200 is sent, an error can only be an event
            status, _ = engine_error_status(exc)
            yield {"event": "error", "data": json.dumps({"status": status, "detail": str(exc)})}
        finally:
            await stream.aclose()

    return EventSourceResponse(events(), ping=15)
