"""``/ask``: multiple-choice reasoning, note question answering, open questions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.deps import Gateway, GatewayDep
from api.errors import ERRORS
from api.observability import log_text
from api.schemas import AskRequest, AskResponse, EvidenceSpan, usage_and_timings
from api.streaming import STREAMED, respond
from medgpt import tasks
from medgpt.evidence import find_evidence

router = APIRouter(tags=["ask"])

def to_response(result: tasks.MCQResult | tasks.TextResult, mode: str) -> AskResponse:
    if isinstance(result, tasks.MCQResult):
        return AskResponse(
            model=result.model, mode="mcq", analysis=result.analysis, answer=result.answer, choice=result.choice,
            rescued=result.rescued, finish_reason=result.finish_reason, **usage_and_timings(result),
        )
    return AskResponse(
        model=result.model, mode=mode, answer=result.text, finish_reason=result.finish_reason,
        **usage_and_timings(result),
    )


def with_evidence(response: AskResponse, body: AskRequest) -> AskResponse:
    """A note answer carries the note's sentences that support it, cut verbatim from the note with their offsets,
    so a clinician can see where it came from; an empty list when no sentence does."""
    if response.mode == "note_qa":
        found = find_evidence(body.context, body.question, response.answer)
        response.evidence = [
            EvidenceSpan(text=e.text, start=e.start, end=e.end, score=e.score) for e in found
        ]
    return response


def ask_stream(gw: Gateway, body: AskRequest):
    limits = gw.settings.limits
    gw.check_size("question", body.question, limits.max_question_chars)
    gw.check_size("context", body.context, limits.max_text_chars)
    for key, text in (body.options or {}).items():
        gw.check_size(f"option {key}", text, limits.max_option_chars)
    log_text(gw.settings.log_text, question=body.question, context=body.context)
    model = gw.model_for(body.model)
    sampling = gw.sampling(body.max_tokens, body.temperature, body.seed)
    if body.mode == "mcq":
        return tasks.mcq_stream(gw.engine, model, body.question, body.options, sampling)
    if body.mode == "note_qa":
        return tasks.note_qa_stream(gw.engine, model, body.context, body.question, sampling)
    return tasks.open_stream(gw.engine, model, body.question, sampling)


@router.post("/ask", response_model=AskResponse, responses={**ERRORS, **STREAMED}, summary="Ask a medical question")
async def ask(body: AskRequest, gw: GatewayDep, request: Request):
    """With `options`: an MCQ answered as `{analysis, answer, choice}` (`choice` is always an option key).
    With `context`: a question about that clinical note. Neither: an open medical question."""
    return await respond(
        request, ask_stream(gw, body), lambda r: with_evidence(to_response(r, body.mode), body), body.stream
    )


@router.get("/ask", response_model=AskResponse, responses=ERRORS, summary="Ask (query-string form, as in v0)")
async def ask_get(
    gw: GatewayDep,
    request: Request,
    prompt: Annotated[str, Query(min_length=1, description="The question.")],
    model: Annotated[str | None, Query(description="Model name; the default when omitted.")] = None,
):
    try:
        body = AskRequest(question=prompt, model=model)
    except ValidationError as exc:  # the query string checked as the POST body is: a 422, never a 500
        raise RequestValidationError(exc.errors(include_input=False)) from None
    return await respond(request, ask_stream(gw, body), lambda r: to_response(r, "open"), False)
