"""What MedGPT does with a model: answer an MCQ, answer a question about a note, answer an open question, summarize.

Each task is an async generator that yields :class:`Token` s as the model writes and ends with its result object,
so the gateway streams (SSE) and collects (JSON) through the same code, and the evaluator measures exactly what the
gateway serves. The ``answer_*``/``summarize`` coroutines are the collected forms.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from medgpt import prompts
from medgpt.engines.base import Engine, GenerationRequest, InvalidOutput, PromptTooLong
from medgpt.prompts import Message, SummaryStyle


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 384
    temperature: float = 0.0
    seed: int | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class Token:
    text: str
    stage: str = "answer"  # "answer", "rescue", "chunk 2/5", "merge"


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens


@dataclass
class TextResult:
    model: str
    text: str
    finish_reason: str | None
    usage: Usage
    seconds: float


@dataclass
class MCQResult:
    model: str
    analysis: str
    answer: str
    choice: str | None  # always an option key when constrained=True
    raw_text: str
    well_formed: bool  # the model's own output followed the format, before any rescue
    rescued: bool  # the choice came from the forced-choice follow-up
    usage: Usage
    seconds: float


@dataclass
class SummaryResult:
    model: str
    summary: str
    style: str
    chunks: int
    usage: Usage
    seconds: float
    partials: list[str] = field(default_factory=list)


class _Run:
    """One task run's bookkeeping: usage over all its generations and the text of the current one."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage = Usage()
        self.started = time.perf_counter()
        self.finish_reason: str | None = None

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    async def generate(self, engine: Engine, request: GenerationRequest, stage: str, sink: list[str]):
        """Stream one generation as tokens, appending its text to ``sink`` and its counts to the run."""
        async for chunk in engine.generate(request):
            if chunk.text:
                sink.append(chunk.text)
                yield Token(chunk.text, stage)
            if chunk.done:
                self.usage.add(chunk.prompt_tokens, chunk.completion_tokens)
                self.finish_reason = chunk.finish_reason


def _request(model: str, messages: list[Message], s: Sampling, **constraint) -> GenerationRequest:
    return GenerationRequest(
        model=model,
        messages=messages,
        max_tokens=s.max_tokens,
        temperature=s.temperature,
        seed=s.seed,
        timeout=s.timeout,
        **constraint,
    )


async def collect(stream: AsyncIterator):
    """Run a task stream to its end and return its result (the last item)."""
    result = None
    try:
        async for item in stream:
            result = item
    finally:
        await stream.aclose()
    return result


# --- multiple-choice reasoning -------------------------------------------------------------------------------------


async def mcq_stream(
    engine: Engine,
    model: str,
    question: str,
    options: Mapping[str, str],
    sampling: Sampling = Sampling(),
    constrained: bool = True,
) -> AsyncIterator[Token | MCQResult]:
    """Answer an MCQ; the result's ``choice`` is always an option key when ``constrained``.

    Constrained: llama.cpp decodes under :func:`prompts.mcq_grammar`; if the output still names no option (tokens ran
    out inside the analysis, or an engine without grammars wrote something else) a short follow-up under a JSON schema
    asks for the key alone. If even that fails, :class:`InvalidOutput`, never a made-up letter.
    ``constrained=False`` measures the model as it is (no grammar, no rescue): what the evaluator's format
    compliance is about.
    """
    run = _Run(model)
    text: list[str] = []
    constraint = {"grammar": prompts.mcq_grammar(options)} if constrained else {}
    request = _request(model, prompts.mcq_messages(question, options), sampling, **constraint)
    async for token in run.generate(engine, request, "answer", text):
        yield token
    raw = "".join(text)
    parsed = prompts.parse_mcq(raw, options)
    choice, rescued = parsed.choice, False
    if constrained and choice is None:
        rescue_messages, schema = prompts.forced_choice_messages(question, options, parsed.analysis)
        rescue = _request(
            model, rescue_messages, Sampling(16, 0.0, sampling.seed, sampling.timeout), json_schema=schema
        )
        rescue_text: list[str] = []
        async for token in run.generate(engine, rescue, "rescue", rescue_text):
            yield token
        choice = _choice_from_json("".join(rescue_text), options)
        if choice is None:
            raise InvalidOutput(f"model {model!r} did not name one of the options {list(options)}")
        rescued = True
    yield MCQResult(
        model=model,
        analysis=parsed.analysis,
        answer=f"{choice}: {options[choice]}" if choice else "",
        choice=choice,
        raw_text=raw,
        well_formed=parsed.well_formed,
        rescued=rescued,
        usage=run.usage,
        seconds=run.seconds(),
    )


def _choice_from_json(text: str, options: Mapping[str, str]) -> str | None:
    try:
        value = json.loads(text).get("choice", "")
    except (ValueError, AttributeError):
        m = re.search(r'"choice"\s*:\s*"([^"]*)"', text)
        value = m.group(1) if m else ""
    return prompts.parse_choice(str(value), options)


async def answer_mcq(engine: Engine, model: str, question: str, options: Mapping[str, str], **kw) -> MCQResult:
    return await collect(mcq_stream(engine, model, question, options, **kw))


# --- note QA and open questions ------------------------------------------------------------------------------------


async def text_stream(
    engine: Engine, model: str, messages: list[Message], sampling: Sampling = Sampling()
) -> AsyncIterator[Token | TextResult]:
    run = _Run(model)
    text: list[str] = []
    async for token in run.generate(engine, _request(model, messages, sampling), "answer", text):
        yield token
    yield TextResult(model, "".join(text).strip(), run.finish_reason, run.usage, run.seconds())


def note_qa_stream(engine: Engine, model: str, note: str, question: str, sampling: Sampling = Sampling()):
    """Asclepius-style: the note and the instruction in one prompt. A note too long for the context is a 413
    (from the engine), not a silently truncated note."""
    return text_stream(engine, model, prompts.note_qa_messages(note, question), sampling)


def open_stream(engine: Engine, model: str, question: str, sampling: Sampling = Sampling()):
    return text_stream(engine, model, prompts.open_question_messages(question), sampling)


async def answer_note(engine: Engine, model: str, note: str, question: str, **kw) -> TextResult:
    return await collect(note_qa_stream(engine, model, note, question, **kw))


async def answer_open(engine: Engine, model: str, question: str, **kw) -> TextResult:
    return await collect(open_stream(engine, model, question, **kw))


# --- summarization -------------------------------------------------------------------------------------------------

#: Tokens kept free in every summarization prompt besides the instruction and the answer.
_MARGIN = 32
#: Rounds of pairwise merging before the final merge; each round halves the partial summaries.
_MAX_MERGE_ROUNDS = 6


async def _budget(engine: Engine, model: str, style: SummaryStyle, max_words: int | None, answer: int) -> int:
    """Tokens of note text one prompt can hold: context − instruction − answer − margin."""
    overhead = await engine.count_tokens(model, prompts.render(prompts.summarize_messages("", style, max_words)))
    budget = await engine.context_length(model) - overhead - answer - _MARGIN
    if budget < 64:
        raise PromptTooLong(f"model {model!r} has too small a context to summarize with max_tokens={answer}")
    return budget


async def split_to_fit(engine: Engine, model: str, text: str, budget: int) -> list[str]:
    """Split ``text`` into consecutive pieces of at most ``budget`` tokens, preferring paragraph, then line, then
    sentence, then word boundaries; only a single over-long word run is cut mid-way. Joined, the pieces are the
    text again."""
    if await engine.count_tokens(model, text) <= budget:
        return [text]
    for sep in ("\n\n", "\n", ". ", " "):
        raw = text.split(sep)
        if len(raw) > 1:
            parts = [p + sep for p in raw[:-1]] + [raw[-1]]
            break
    else:
        half = len(text) // 2
        parts = [text[:half], text[half:]]
    # Each part is counted once, on its own: a sum of separate counts (each with its own BOS) is never below the
    # count of the joined text, so packing by sums stays within the budget without re-tokenizing.
    out: list[str] = []
    current, used = "", 0
    for part in parts:
        n = await engine.count_tokens(model, part)
        if n > budget:  # a single part too long for one prompt: split it further
            if current:
                out.append(current)
            out.extend(await split_to_fit(engine, model, part, budget))
            current, used = "", 0
        elif current and used + n > budget:
            out.append(current)
            current, used = part, n
        else:
            current, used = current + part, used + n
    if current:
        out.append(current)
    return [p for p in out if p.strip()]


async def summarize_stream(
    engine: Engine,
    model: str,
    text: str,
    style: SummaryStyle = "brief",
    max_words: int | None = None,
    sampling: Sampling = Sampling(),
) -> AsyncIterator[Token | SummaryResult]:
    """Summarize; a note longer than the context is split, each part summarized, and the parts merged (map-reduce),
    repeatedly if the partial summaries themselves do not fit. Nothing is silently truncated."""
    run = _Run(model)
    budget = await _budget(engine, model, style, max_words, sampling.max_tokens)
    chunks = await split_to_fit(engine, model, text, budget)
    partials: list[str] = []
    if len(chunks) == 1:
        out: list[str] = []
        request = _request(model, prompts.summarize_messages(text, style, max_words), sampling)
        async for token in run.generate(engine, request, "answer", out):
            yield token
        summary = "".join(out).strip()
    else:
        for i, chunk in enumerate(chunks, 1):
            out = []
            request = _request(model, prompts.summarize_messages(chunk, "brief"), sampling)
            async for token in run.generate(engine, request, f"chunk {i}/{len(chunks)}", out):
                yield token
            partials.append("".join(out).strip())
        level = partials
        for _ in range(_MAX_MERGE_ROUNDS):
            merged = prompts.render(prompts.merge_summaries_messages(level, style, max_words))
            if await engine.count_tokens(model, merged) <= budget + _MARGIN or len(level) == 1:
                break
            # Too many partial summaries for one prompt: merge them in halves first.
            mid = len(level) // 2
            level = [await _merge(engine, model, run, level[:mid], sampling),
                     await _merge(engine, model, run, level[mid:], sampling)]
        out = []
        request = _request(model, prompts.merge_summaries_messages(level, style, max_words), sampling)
        async for token in run.generate(engine, request, "merge", out):
            yield token
        summary = "".join(out).strip()
    yield SummaryResult(model, summary, style, len(chunks), run.usage, run.seconds(), partials)


async def _merge(engine: Engine, model: str, run: _Run, parts: list[str], sampling: Sampling) -> str:
    out: list[str] = []
    request = _request(model, prompts.merge_summaries_messages(parts, "brief"), sampling)
    async for _ in run.generate(engine, request, "merge", out):
        pass
    return "".join(out).strip()


async def summarize(engine: Engine, model: str, text: str, **kw) -> SummaryResult:
    return await collect(summarize_stream(engine, model, text, **kw))
