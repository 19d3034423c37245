"""``/v1/chat/completions`` and ``/v1/models``: the OpenAI wire format, so the ``openai`` SDK, LangChain and any
OpenAI client work against MedGPT with only their base URL changed (``base_url="http://127.0.0.1:8000/v1"``).

The same gateway answers as on ``/ask``: the client's key and rate limits (the router is included behind the
same dependency), a turn of the engine's admission queue and the stop-on-disconnect (:func:`api.streaming.respond`),
the loop and echo guards (:func:`medgpt.tasks.chat_stream`), and no message text in any log unless ``log_text``
is on. Only the shapes differ:

- Messages are sent to the model as the client wrote them (no MedGPT prompt around them); a ``developer`` message
  is a ``system`` one, and list contents are accepted when every part is text.
- ``temperature`` defaults to the gateway's default (0, as on ``/ask``), not OpenAI's 1.
- ``finish_reason`` is ``stop`` or ``length``, the only two OpenAI defines that apply: an answer the loop guard cut
  (MedGPT's ``repetition``) ends with ``stop`` — the server ended it, and more tokens would not help — and is
  counted under ``reason="repetition"`` in ``medgpt_finish_total``.
- A stream is ``data:`` lines only, as OpenAI sends them: a first chunk with the role, content deltas, a last
  chunk with the finish reason (and, with ``stream_options.include_usage``, a usage chunk), then ``data: [DONE]``;
  an error after the stream started is a ``data: {"error": ...}`` line, which the SDK raises. As on ``/ask``,
  what was streamed is not taken back: the tokens of a loop before the guard fired, or of an echoed answer before
  its retry, have been sent; the non-streamed answer carries only the trimmed (or retried) text.
- Errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}`` with the same status and message as on
  ``/ask`` (a validation error is a 400, not a 422): :class:`OpenAIRoute`, the one place they are shaped.
- A ``response_format`` schema is bounded while the body is read (:mod:`medgpt.schema_limits`: size, depth, enums,
  alternatives, repetitions, local ``$ref`` only; a 400 naming the bound) and, for the engines that decode under
  grammars, converted to GBNF before the request takes its turn in the queue: a schema cannot hold the engine.
- OpenAI's parameters that MedGPT cannot honour are refused (400 naming the parameter), never silently dropped:
  ``n`` > 1, ``logprobs``, tools and functions (``parallel_tool_calls`` included), ``modalities`` other than
  ``["text"]``, ``audio``, ``prediction``, ``web_search_options``, non-text content parts; each is accepted only
  absent, null or at its "off" value. Sampling hints the engines do not take (``top_p``, ``presence_penalty``,
  ``frequency_penalty``, ``reasoning_effort``, ``verbosity``) and bookkeeping fields (``user``, ``metadata``,
  ``store``, ``service_tier``...) are accepted and ignored, and so is any field OpenAI does not define (a
  vendor's extension), as OpenAI-compatible servers do.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from starlette.exceptions import HTTPException

from api import errors
from api.deps import Gateway, GatewayDep
from api.observability import log_text
from api.schemas import json_int
from api.streaming import Events, respond
from medgpt import schema_limits, tasks
from medgpt.engines import EngineError, ModelNotFound, Overloaded, PromptTooLong, Unsupported
from medgpt.prompts import Message

# --- errors --------------------------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail


#: OpenAI's error ``type`` for each status; any other status ≥ 500 is a ``server_error``.
ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
               404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
               501: "invalid_request_error"}  # fmt: skip
#: The ``code`` of an error by status, where no more specific one (:data:`ENGINE_CODES`) applies.
STATUS_CODES = {400: "invalid_value", 401: "invalid_api_key", 404: "not_found", 413: "request_too_large",
                429: "rate_limit_exceeded", 501: "unsupported", 502: "engine_error", 503: "engine_unavailable",
                504: "timeout"}  # fmt: skip
#: The ``code`` of each core error whose kind a client may act on; the first class that matches wins.
ENGINE_CODES: dict[type[EngineError], str] = {
    ModelNotFound: "model_not_found",
    PromptTooLong: "context_length_exceeded",
    Overloaded: "overloaded",
    Unsupported: "unsupported",
}


def error_response(status: int, message: str, *, code: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    """An OpenAI-shaped error; a 422 (the gateway's invalid request) answers as OpenAI's 400."""
    status = 400 if status == 422 else status
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    detail = ErrorDetail(message=message, type=kind, param=param, code=code or STATUS_CODES.get(status))
    return JSONResponse(ErrorResponse(error=detail).model_dump(), status_code=status, headers=headers)


def error_data(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """The same error as a stream's ``data:`` line, for errors after the 200 was sent."""
    return json.loads(error_response(status, message, code=code).body)


def _engine_code(exc: EngineError) -> str | None:
    return next((code for cls, code in ENGINE_CODES.items() if isinstance(exc, cls)), None)


class OpenAIRoute(APIRoute):
    """A route answering every error in OpenAI's shape, with the status, headers and message ``/ask`` would give
    (from :mod:`api.errors`, :mod:`api.security`, :mod:`api.ratelimit`): the one place the ``/v1`` error format
    is made (:data:`ERRORS` documents the same shape)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def openai_errors(request: Request):
            try:
                return await handler(request)
            except RequestValidationError as exc:  # the same sentences as /ask's 422, which never echo input
                message = json.loads((await errors.validation_error(request, exc)).body)["detail"]
                loc = next((e.get("loc") for e in exc.errors()), ())
                param = ".".join(str(p) for p in loc if p != "body") or None
                return error_response(400, message, param=param)
            except HTTPException as exc:  # keys (401), rate limits (429), sizes (413), max_tokens (422 → 400)
                return error_response(exc.status_code, str(exc.detail), headers=exc.headers)
            except EngineError as exc:
                status, headers = errors.engine_error_status(exc)
                errors.log_engine_error(status, exc)
                return error_response(
                    status, errors.client_message(exc), code=_engine_code(exc), headers=headers
                )

        return openai_errors


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)

#: The error responses of the /v1 routes, for the OpenAPI schema. 401 and 429 are declared here too, in this shape
#: (the ones main.py adds where keys or limits are on have /ask's): the route-level declaration wins.
ERRORS = {
    401: {
        "model": ErrorResponse,
        "description": "No API key or an invalid one, where keys are on (code "
        "`invalid_api_key`, WWW-Authenticate set)",
    },
    429: {
        "model": ErrorResponse,
        "description": "Over the client's requests or generated tokens per minute, where "
        "a limit is on (Retry-After set)",
    },
    400: {"model": ErrorResponse, "description": "Invalid request, or a parameter MedGPT does not support"},
    404: {"model": ErrorResponse, "description": "Unknown model (code `model_not_found`)"},
    413: {
        "model": ErrorResponse,
        "description": "Messages over the configured limit, or too long for the model",
    },
    501: {"model": ErrorResponse, "description": "A response_format the model's engine cannot decode under"},
    502: {"model": ErrorResponse, "description": "The model's output could not be used (an echoed prompt)"},
    503: {"model": ErrorResponse, "description": "Engine busy or unavailable (Retry-After set)"},
    504: {"model": ErrorResponse, "description": "Generation exceeded the configured timeout"},
}


# --- requests ------------------------------------------------------------------------------------------------------


def _refuse(what: str, off: Any):
    """A before-validator refusing any value but None and ``off`` (the feature switched off, of the same JSON
    type: ``0`` is not ``false``), with a sentence naming what is not supported; the field's schema
    (``max_length=0``, a ``Literal``) says the same to generated clients."""

    def refuse(value: Any) -> Any:
        if value is not None and not (type(value) is type(off) and value == off):
            raise ValueError(f"{what} not supported by MedGPT")
        return value

    return BeforeValidator(refuse)


class ContentPart(BaseModel):
    """A text part of a message's content (images, audio and files are refused: the models here read text)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["text"]
    text: str

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("type") != "text":
            raise ValueError("only text content parts are supported (no images, audio or files)")
        return value


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # name, refusal, audio...: nothing the model reads

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    tool_calls: Annotated[Annotated[list[Any], Field(max_length=0)] | None, _refuse("tool calls are", [])] = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool = False


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)

    name: str = "response"
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="Bounded in size and shape (medgpt/schema_limits.py); `$ref` only local."
    )
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _bounded(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        """Within the bounds of :mod:`medgpt.schema_limits`, checked while the body is read: before the model,
        the queue or any engine sees it (a 400 naming the bound, never the client's values)."""
        return None if schema is None else schema_limits.check(schema)


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    def schema_for_engine(self) -> dict[str, Any] | None:
        """The JSON schema the output must satisfy: none for text, any object for ``json_object``."""
        if self.type == "text":
            return None
        if self.type == "json_object" or self.json_schema is None or self.json_schema.schema_ is None:
            return {"type": "object"}
        return self.json_schema.schema_


CHAT_EXAMPLE = {
    "model": "medgpt",
    "messages": [
        {"role": "user", "content": "What are the first-line treatments for community-acquired pneumonia?"}
    ],
    "max_tokens": 64,
}


class ChatCompletionRequest(BaseModel):
    # strict: JSON types as the schema states them (no true/false for a number); fields OpenAI does not define are
    # ignored, the OpenAI parameters MedGPT cannot honour are declared below and refused
    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra={"examples": [CHAT_EXAMPLE]})

    model: str = Field(..., min_length=1, description="A model id from GET /v1/models.")
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: json_int(ge=1) | None = Field(None, description="Upper bound on generated tokens (deprecated by OpenAI).")
    max_completion_tokens: json_int(ge=1) | None = Field(None, description="Upper bound on generated tokens.")
    temperature: float | None = Field(
        None, ge=0.0, le=2.0, description="The gateway's default (0) when omitted."
    )
    seed: json_int(0, 2**31 - 1) | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: (
        Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)]
        | None
    ) = Field(None, description="Up to 4 (non-empty) strings that end the answer.")
    n: json_int(1, 1) | None = Field(None, description="Only 1.")
    response_format: ResponseFormat | None = None
    # Accepted, not applied: sampling hints the engines do not take, and bookkeeping.
    top_p: float | None = Field(None, ge=0.0, le=1.0, description="Accepted and ignored.")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="Accepted and ignored.")
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="Accepted and ignored.")
    user: str | None = Field(None, description="Accepted and ignored.")
    # Refused unless absent or off: features a client would otherwise rely on without getting them.
    logprobs: Annotated[Literal[False] | None, _refuse("logprobs are", False)] = None
    top_logprobs: Annotated[Literal[0] | None, _refuse("top_logprobs are", 0)] = None
    tools: Annotated[Annotated[list[Any], Field(max_length=0)] | None, _refuse("tools are", [])] = None
    tool_choice: Annotated[Literal["none"] | None, _refuse("tool_choice is", "none")] = None
    functions: Annotated[Annotated[list[Any], Field(max_length=0)] | None, _refuse("functions are", [])] = None
    function_call: Annotated[Literal["none"] | None, _refuse("function_call is", "none")] = None
    logit_bias: Annotated[Annotated[dict[str, float], Field(max_length=0)] | None, _refuse("logit_bias is", {})] = None
    parallel_tool_calls: Annotated[Literal[False] | None, _refuse("parallel_tool_calls is", False)] = None
    modalities: Annotated[list[Literal["text"]] | None, _refuse("modalities other than text are", ["text"])] = None
    audio: Annotated[None, _refuse("audio output is", None)] = None
    prediction: Annotated[None, _refuse("predicted outputs (prediction) are", None)] = None
    web_search_options: Annotated[None, _refuse("web search is", None)] = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError(f"give at most 4 stop strings, got {len(stops)}")
        if any(not s for s in stops):
            raise ValueError("a stop string is empty")
        return stops


# --- responses -----------------------------------------------------------------------------------------------------


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: None = None

    @property
    def mode(self) -> str:
        """What the gateway's metrics count this answer under (not part of the body)."""
        return "chat"


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(
        ..., description="When the model's weights were written (Unix time; 0 when unknown)."
    )
    owned_by: str = "medgpt"


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


def finish_reason(reason: str | None) -> Literal["stop", "length"]:
    """OpenAI's finish reason for the task's: ``length`` when max_tokens ended it; ``stop`` for the model's own
    end, a stop string, and the loop guard's cut (``repetition``), which more tokens would not have avoided."""
    return "length" if reason == "length" else "stop"


def usage(result: tasks.TextResult) -> CompletionUsage:
    u = result.usage
    return CompletionUsage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                           total_tokens=u.prompt_tokens + u.completion_tokens)  # fmt: skip


class ChunkEvents(Events):
    """A stream in OpenAI's ``chat.completion.chunk`` format (``data:`` lines only)."""

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self.head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                     "system_fingerprint": None}  # fmt: skip
        self.include_usage = include_usage
        self.role_sent = False

    def _chunk(self, delta: dict[str, str], finish: str | None = None) -> dict[str, str]:
        chunk = {
            **self.head,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:  # every chunk has the key; only the last one a value
            chunk["usage"] = None
        return {"data": json.dumps(chunk)}

    def _role(self) -> list[dict[str, str]]:
        if self.role_sent:
            return []
        self.role_sent = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def token(self, token: tasks.Token) -> list[dict[str, str]]:
        return self._role() + ([self._chunk({"content": token.text})] if token.text else [])

    def result(self, response: ChatCompletion) -> list[dict[str, str]]:
        events = self._role() + [self._chunk({}, response.choices[0].finish_reason)]
        if self.include_usage:
            events.append(
                {"data": json.dumps({**self.head, "choices": [], "usage": response.usage.model_dump()})}
            )
        return events + [{"data": "[DONE]"}]

    def error(self, exc: EngineError, status: int, detail: str) -> list[dict[str, str]]:
        return [{"data": json.dumps(error_data(status, detail, _engine_code(exc)))}]


# --- routes --------------------------------------------------------------------------------------------------------


def _messages(body: ChatCompletionRequest) -> list[Message]:
    return [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages
    ]


def _check_model(gw: Gateway, model: str) -> None:
    """A model id this gateway serves now (the ones ``/v1/models`` lists), else 404 ``model_not_found``, which
    lists those and does not quote the client's string."""
    available = gw.engine.available()
    if model not in available:
        raise ModelNotFound(f"unknown model; available: {sorted(available)}")


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {"schema": {"type": ["object", "string"]}}},  # chunks, then [DONE]
                               "description": "A chat completion, or with `stream: true` its chunks (SSE)"}},
    summary="Chat completion (OpenAI-compatible)",
)  # fmt: skip
async def chat_completions(body: ChatCompletionRequest, gw: GatewayDep, request: Request):
    """OpenAI's chat completion: the same engines, guards, keys, limits and admission queue as `/ask`."""
    messages = _messages(body)
    limits = gw.settings.limits
    gw.check_size("messages", "\n".join(m["content"] for m in messages), limits.max_text_chars)
    log_text(gw.settings.log_text, messages="\n".join(m["content"] for m in messages))
    _check_model(gw, body.model)
    gw.check_max_tokens(body.max_tokens)  # both bounds within the limit, as the schema says, whichever is used
    gw.check_max_tokens(body.max_completion_tokens, "max_completion_tokens")
    sampling = gw.sampling(body.max_completion_tokens or body.max_tokens, body.temperature or 0.0, body.seed)
    schema = body.response_format.schema_for_engine() if body.response_format else None
    grammar = None
    if schema is not None and gw.engine.capabilities.grammar:
        # Converted here, before the request takes its turn in the queue: the engine gets the GBNF (of bounded
        # size) and only parses it under its lock, never converts a client's schema there.
        try:
            grammar = await asyncio.to_thread(schema_limits.to_grammar, schema)
        except schema_limits.SchemaRefused as exc:
            return error_response(400, f"response_format.json_schema.schema: {exc}",
                                  param="response_format.json_schema.schema")
        schema = None
    stream = tasks.chat_stream(gw.engine, body.model, messages, sampling, stop=tuple(body.stop or ()),
                               json_schema=schema, grammar=grammar)  # fmt: skip
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def to_response(result: tasks.TextResult) -> ChatCompletion:
        choice = Choice(
            message=AssistantMessage(content=result.text), finish_reason=finish_reason(result.finish_reason)
        )
        return ChatCompletion(id=completion_id, created=created, model=result.model, choices=[choice],
                              usage=usage(result))  # fmt: skip

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    events = ChunkEvents(completion_id, created, body.model, include_usage)
    return await respond(request, stream, to_response, bool(body.stream), events)


def _model(gw: Gateway, name: str) -> OpenAIModel:
    """The model card; ``created`` is when its weights file was written, where the gateway has one."""
    spec = gw.engine.specs[name]
    try:
        created = int(spec.path.stat().st_mtime) if spec.path is not None else 0
    except OSError:
        created = 0
    return OpenAIModel(id=name, created=created)


@router.get("/models", response_model=OpenAIModelList, responses={s: ERRORS[s] for s in (401, 429)},
            summary="List models (OpenAI-compatible)")  # fmt: skip
async def list_models(gw: GatewayDep) -> OpenAIModelList:
    """The models this gateway serves now, by the id a chat completion names."""
    return OpenAIModelList(data=[_model(gw, name) for name in gw.engine.available()])


@router.get("/models/{model}", response_model=OpenAIModel, responses={s: ERRORS[s] for s in (401, 404, 429)},
            summary="Retrieve a model (OpenAI-compatible)")  # fmt: skip
async def retrieve_model(model: str, gw: GatewayDep) -> OpenAIModel:
    _check_model(gw, model)
    return _model(gw, model)
