"""``/summarize``: clinical note or transcription → summary, chunked when longer than the model's context."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import GatewayDep
from api.errors import ERRORS
from api.observability import log_text
from api.schemas import SummarizeRequest, SummarizeResponse, usage_and_timings
from api.streaming import STREAMED, respond
from medgpt import tasks

router = APIRouter(tags=["summarize"])


def to_response(result: tasks.SummaryResult) -> SummarizeResponse:
    return SummarizeResponse(
        model=result.model,
        summary=result.summary,
        style=result.style,
        chunks=result.chunks,
        finish_reason=result.finish_reason,
        **usage_and_timings(result),
    )


@router.post("/summarize", response_model=SummarizeResponse, responses={**ERRORS, **STREAMED}, summary="Summarize a clinical note")
async def summarize(body: SummarizeRequest, gw: GatewayDep, request: Request):
    """Styles: `brief` (a few sentences), `bullets`, `soap`. Text longer than the model's context is split,
    summarized part by part and merged; `chunks` says into how many parts."""
    gw.check_size("text", body.text, gw.settings.limits.max_text_chars)
    log_text(gw.settings.log_text, text=body.text)
    stream = tasks.summarize_stream(
        gw.engine,
        gw.model_for(body.model),
        body.text,
        body.style,
        body.max_words,
        gw.sampling(body.max_tokens, body.temperature, body.seed),
        work_budget=gw.settings.limits.max_request_tokens,
    )
    return await respond(request, stream, to_response, body.stream)
