"""What MedGPT does with a model: answer an MCQ, answer a question about a note, answer an open question, summarize.

Each task is an async generator that yields :class:`Token` s as the model writes and ends with its result object,
so the gateway streams (SSE) and collects (JSON) through the same code, and the evaluator measures exactly what the
gateway serves. The ``answer_*``/``summarize`` coroutines are the collected forms.

Every generation passes through two guards (definitions in :mod:`medgpt.guards`):

- **loop**: a generation that starts repeating itself is stopped at once (the engine's stream is closed, which
  stops llama.cpp within one token) and its text cut where the repetition began; the result says
  ``finish_reason="repetition"``. A looping MCQ analysis is cut the same way and the choice then comes from the
  forced-choice rescue.
- **echo**: an open, note-QA or summary answer that is mostly the prompt copied back is generated once more with a
  stronger repeat penalty (``ECHO_RETRY_PENALTY``); if that is an echo too, :class:`EchoedPrompt` (HTTP 502),
  never the echo.

Streams cannot take back what they sent: the tokens of a loop up to where the guard fired, and those of an echoed
answer before its retry (stage ``retry``), have already been yielded. The result object, the last item, always
carries the trimmed (or retried) text; a client shows that once it arrives.

Each result lists the guards that fired during its run in ``guards`` (``"repetition"`` per cut generation,
``"echo"`` per echoed one) so the gateway can count them without looking at any text.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace

from medgpt import prompts
from medgpt.engines.base import (
    Engine,
    GenerationRequest,
    GenerationTimeout,
    InvalidOutput,
    PromptTooLong,
    WorkOverBudget,
)
from medgpt.guards import RepetitionGuard, is_echo
from medgpt.prompts import Message, SummaryStyle

#: Repeat penalty of each mode when the request sets none (1.0 = none, llama-cpp-python's default; Ollama's is
#: 1.1). Measured with greedy decoding on the 270M base and medgpt models, 4 dev prompts per mode, 192 new tokens:
#: MCQ answers of the first (MCQ-only) adapter were token for token the same at 1.0, 1.1 and 1.2; the multi-task
#: adapter's analyses, which carry real explanations, looped at 1.0 (the loop guard cut most of the first MedQA dev
#: questions) and stopped on their own at 1.15 (8 of 8), so 1.15. Free text (open, note QA, summaries) was a loop or
#: an echo in 23 of 24 answers at 1.0, 21 at 1.1 and 17 at 1.2, so 1.2. llama.cpp penalises only tokens the model
#: itself wrote in the last 64, never the prompt: quoting the note costs nothing.
#: Chat (the client's own turns) takes the open question's penalty.
REPEAT_PENALTY: dict[str, float] = {"mcq": 1.15, "open": 1.2, "note_qa": 1.2, "summarize": 1.2, "chat": 1.2}
#: The repeat penalty of the one retry after an echoed answer (or the mode's, if that is higher). Since the penalty
#: never covers the prompt, it cannot stop the copy's first words; it breaks the copy after a few words, which
#: turned some of the base model's echoes into answers and left others echoes (then refused): 1.5 and 2.0 did the
#: same on the summaries tried.
ECHO_RETRY_PENALTY = 1.5


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """How a task samples, and the deadline of its whole request. Keyword-only, so a field added or moved can
    never be dropped or shifted by a positional call; derive a variant with :func:`dataclasses.replace`."""

    max_tokens: int = 384
    temperature: float = 0.0
    seed: int | None = None
    timeout: float | None = None
    #: None: the mode's default from :data:`REPEAT_PENALTY`.
    repeat_penalty: float | None = None
    #: ``time.monotonic()`` by which the whole request (every chunk and merge of a long summary) must be done:
    #: each generation gets at most the time left, and none starts after it (:class:`GenerationTimeout`).
    deadline: float | None = None


class EchoedPrompt(InvalidOutput):
    """The answer was mostly the prompt copied back, and again after a retry with a stronger repeat penalty.

    Carries the task's ``mode`` and the ``guards`` that fired, so the gateway can count it without any text.
    """

    def __init__(self, model: str, mode: str, guards: list[str]) -> None:
        super().__init__(
            f"the model echoed the prompt instead of answering (model {model!r}, also on a retry with a stronger "
            "repeat penalty)"
        )
        self.mode = mode
        self.guards = guards


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
    guards: list[str] = field(default_factory=list)


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
    finish_reason: str | None = None  # of the model's own answer, before any rescue
    guards: list[str] = field(default_factory=list)


@dataclass
class SummaryResult:
    model: str
    summary: str
    style: str
    chunks: int
    usage: Usage
    seconds: float
    partials: list[str] = field(default_factory=list)
    #: "repetition" when the loop guard cut any of the run's generations, else the final generation's reason.
    finish_reason: str | None = None
    guards: list[str] = field(default_factory=list)


class _Run:
    """One task run's bookkeeping: usage over all its generations, the latest finish reason, the guards fired."""

    def __init__(self, model: str, mode: str) -> None:
        self.model = model
        self.mode = mode
        self.usage = Usage()
        self.started = time.perf_counter()
        self.finish_reason: str | None = None
        self.guards: list[str] = []

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    async def generate(self, engine: Engine, request: GenerationRequest, stage: str, sink: list[str]):
        """Stream one generation as tokens, appending its text to ``sink`` (a fresh list) and its counts to the run.

        The loop guard watches the text: once it fires, the engine's stream is closed (llama.cpp stops within one
        token, Ollama and OpenAI-compatible servers see the HTTP stream close), ``sink`` becomes the text up to
        where the loop began and the finish reason ``"repetition"``. The tokens of the loop yielded before the
        guard fired cannot be taken back; the task's result carries the trimmed text. A cut stream never sends
        its usage, so the prompt is counted with the engine's tokenizer (an estimate on engines without one) and
        the completion as the pieces received (one per token on the engines here).
        """
        guard = RepetitionGuard()
        pieces = 0
        stream = engine.generate(request)
        try:
            async for chunk in stream:
                if chunk.text:
                    pieces += 1
                    if guard.feed(chunk.text):
                        break
                    sink.append(chunk.text)
                    yield Token(chunk.text, stage)
                if chunk.done:
                    self.usage.add(chunk.prompt_tokens, chunk.completion_tokens)
                    self.finish_reason = chunk.finish_reason
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:  # stops the engine now, not when the stream is garbage-collected
                await aclose()
        if guard.keep is not None:
            sink[:] = [guard.keep]
            self.finish_reason = "repetition"
            self.guards.append("repetition")
            prompt = (await engine.template(request.model)).render(request.messages)
            prompt_tokens = await engine.count_tokens(request.model, prompt)
            self.usage.add(prompt_tokens, pieces)

    async def answer(
        self, engine: Engine, request: GenerationRequest, stage: str, sink: list[str], instruction: str
    ):
        """:meth:`generate`, guarded against echoes: an answer that :func:`medgpt.guards.is_echo` calls a copy of
        the prompt is generated once more with at least :data:`ECHO_RETRY_PENALTY` (stage ``retry``); if the retry
        echoes too, :class:`EchoedPrompt`. ``instruction`` is the prompt's fixed part, which no real answer
        repeats; the copied spans are looked for in the whole prompt as sent, so a copy running from the
        instruction into the user's text counts too."""
        prompt = "\n".join(m["content"] for m in request.messages)
        async for token in self.generate(engine, request, stage, sink):
            yield token
        if not is_echo("".join(sink), prompt, instruction):
            return
        self.guards.append("echo")
        sink.clear()
        retry = replace(request, repeat_penalty=max(ECHO_RETRY_PENALTY, request.repeat_penalty or 1.0))
        async for token in self.generate(engine, retry, "retry", sink):
            yield token
        if is_echo("".join(sink), prompt, instruction):
            self.guards.append("echo")
            raise EchoedPrompt(self.model, self.mode, list(self.guards))


def _request(model: str, messages: list[Message], s: Sampling, mode: str, **constraint) -> GenerationRequest:
    timeout = s.timeout
    if s.deadline is not None:
        left = s.deadline - time.monotonic()
        if left <= 0:
            raise GenerationTimeout("the request ran past its deadline")
        timeout = left if timeout is None else min(timeout, left)
    return GenerationRequest(
        model=model,
        messages=messages,
        max_tokens=s.max_tokens,
        temperature=s.temperature,
        seed=s.seed,
        timeout=timeout,
        repeat_penalty=REPEAT_PENALTY[mode] if s.repeat_penalty is None else s.repeat_penalty,
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

    Constrained: an engine whose capabilities include grammars (llama.cpp) decodes under
    :func:`prompts.mcq_grammar`; if the output still names no option (tokens ran out inside the analysis, or
    an engine without grammars wrote something else) a short follow-up under a JSON schema asks for the key
    alone. If even that fails, :class:`InvalidOutput`, never a made-up letter.
    ``constrained=False`` measures the model as it is (no grammar, no rescue): what the evaluator's format
    compliance is about.
    """
    run = _Run(model, "mcq")
    text: list[str] = []
    # A grammar enforces the format where the engine decodes under one; elsewhere the rescue below does.
    grammar = constrained and engine.capabilities.grammar
    constraint = {"grammar": prompts.mcq_grammar(options)} if grammar else {}
    request = _request(model, prompts.mcq_messages(question, options), sampling, "mcq", **constraint)
    async for token in run.generate(engine, request, "answer", text):
        yield token
    finish_reason = run.finish_reason
    raw = "".join(text)  # a looping analysis arrives here cut, without its closing tag: rescued below
    parsed = prompts.parse_mcq(raw, options)
    choice, rescued = parsed.choice, False
    if constrained:
        # The analysis decides: a small model's letter after it follows a letter prior (the multi-task adapter wrote
        # "D" for ~80 % of MedQA dev questions whatever its analysis said), so when the analysis names exactly one
        # option, that option is the answer and the served answer never contradicts the served reasoning.
        choice = prompts.option_named(parsed.analysis, options) or choice
    if constrained and choice is None:
        rescue_messages, schema = prompts.forced_choice_messages(question, options, parsed.analysis)
        # The request's own sampling, deadline included (no rescue starts after it), only shorter and greedy.
        rescue_sampling = replace(sampling, max_tokens=16, temperature=0.0)
        # Without JSON-schema decoding the schema is still in the prompt, and the reply is parsed leniently.
        schema_constraint = {"json_schema": schema} if engine.capabilities.json_schema else {}
        rescue = _request(model, rescue_messages, rescue_sampling, "mcq", **schema_constraint)
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
        finish_reason=finish_reason,
        guards=run.guards,
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
    engine: Engine,
    model: str,
    messages: list[Message],
    sampling: Sampling = Sampling(),
    *,
    mode: str = "open",
    instruction: str = "",
) -> AsyncIterator[Token | TextResult]:
    """A free-text answer, loop- and echo-guarded; ``instruction`` is the fixed part of the prompt (empty: an echo
    is then recognised by length alone)."""
    run = _Run(model, mode)
    text: list[str] = []
    request = _request(model, messages, sampling, mode)
    async for token in run.answer(engine, request, "answer", text, instruction):
        yield token
    yield TextResult(model, "".join(text).strip(), run.finish_reason, run.usage, run.seconds(), run.guards)


def note_qa_stream(engine: Engine, model: str, note: str, question: str, sampling: Sampling = Sampling()):
    """Asclepius-style: the note and the instruction in one prompt. A note too long for the context is a 413
    (from the engine), not a silently truncated note."""
    return text_stream(
        engine, model, prompts.note_qa_messages(note, question), sampling, mode="note_qa",
        instruction=prompts.note_qa_instruction(),
    )


def open_stream(engine: Engine, model: str, question: str, sampling: Sampling = Sampling()):
    return text_stream(
        engine, model, prompts.open_question_messages(question), sampling, mode="open",
        instruction=prompts.open_question_instruction(),
    )


async def answer_note(engine: Engine, model: str, note: str, question: str, **kw) -> TextResult:
    return await collect(note_qa_stream(engine, model, note, question, **kw))


async def answer_open(engine: Engine, model: str, question: str, **kw) -> TextResult:
    return await collect(open_stream(engine, model, question, **kw))


# --- summarization -------------------------------------------------------------------------------------------------

#: Tokens kept free in every summarization prompt besides the instruction and the answer (the merge prompt's
#: instruction and its ``[Part i]`` labels are a few tokens longer than the summary prompt's).
_MARGIN = 32


async def _budget(engine: Engine, model: str, style: SummaryStyle, max_words: int | None, answer: int) -> int:
    """Tokens of note text one prompt can hold: context − instruction − answer − margin."""
    empty = prompts.summarize_messages("", style, max_words)
    overhead = await engine.count_tokens(model, (await engine.template(model)).render(empty))
    budget = await engine.context_length(model) - overhead - answer - _MARGIN
    if budget < 64:
        raise PromptTooLong(f"model {model!r} has too small a context to summarize with max_tokens={answer}")
    return budget


def summary_work(chunks: int, part_tokens: int, answer_tokens: int, fan_in: int) -> int:
    """The most tokens a summary of ``chunks`` parts can make the model generate: a partial summary of at most
    ``part_tokens`` per chunk, rounds of merges of up to ``fan_in`` partials each (every merge at most
    ``part_tokens``) until one prompt holds them all, then the final answer of ``answer_tokens``. Known before
    any generation, so a request over the configured budget is refused before it costs anything."""
    if chunks <= 1:
        return answer_tokens
    total, level = chunks * part_tokens, chunks
    while level > fan_in:
        level = math.ceil(level / fan_in)
        total += level * part_tokens
    return total + answer_tokens


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


class _Merger:
    """The reduce step of a long summary. Partial summaries are capped at half a chunk's budget, so any two fit
    one merge prompt: merging consecutive groups that fit always shrinks the list, and the rounds end with one
    prompt holding every partial summary, which the final merge answers in the requested style. A merge never
    starts that would not fit (no 413 after the work is done)."""

    def __init__(self, engine: Engine, model: str, run: _Run, sampling: Sampling, budget: int) -> None:
        self.engine, self.model, self.run = engine, model, run
        #: The sampling of partial summaries and intermediate merges: at most half a chunk's budget each.
        self.part = replace(sampling, max_tokens=min(sampling.max_tokens, budget // 2 - _MARGIN // 2))

    async def fits(
        self, parts: list[str], answer: int, style: SummaryStyle = "brief", max_words: int | None = None
    ) -> bool:
        """Whether one merge prompt holds ``parts`` with room for ``answer`` tokens."""
        messages = prompts.merge_summaries_messages(parts, style, max_words)
        prompt = (await self.engine.template(self.model)).render(messages)
        used = await self.engine.count_tokens(self.model, prompt) + answer
        return used <= await self.engine.context_length(self.model)

    async def reduce(self, parts: list[str], final: Sampling, style: SummaryStyle, max_words: int | None):
        """Merge rounds until the final merge prompt (``style``, ``final.max_tokens`` of answer) holds all."""
        while len(parts) > 1 and not await self.fits(parts, final.max_tokens, style, max_words):
            groups: list[list[str]] = [[parts[0]]]
            for part in parts[1:]:
                if await self.fits([*groups[-1], part], self.part.max_tokens):
                    groups[-1].append(part)
                else:
                    groups.append([part])
            if len(groups) == len(parts):  # no two partial summaries fit one prompt: cannot shrink
                raise PromptTooLong(f"model {self.model!r}: partial summaries too long to merge")
            parts = [await self.merge(g) if len(g) > 1 else g[0] for g in groups]
        return parts

    async def merge(self, parts: list[str]) -> str:
        out: list[str] = []
        request = _request(self.model, prompts.merge_summaries_messages(parts, "brief"), self.part, "summarize")
        async for _ in self.run.answer(self.engine, request, "merge", out, prompts.merge_instruction("brief")):
            pass
        return "".join(out).strip()


async def summarize_stream(
    engine: Engine,
    model: str,
    text: str,
    style: SummaryStyle = "brief",
    max_words: int | None = None,
    sampling: Sampling = Sampling(),
    work_budget: int | None = None,
) -> AsyncIterator[Token | SummaryResult]:
    """Summarize; a note longer than the context is split, each part summarized, and the parts merged (map-reduce),
    in rounds while the partial summaries together do not fit one prompt. Nothing is silently truncated. Every
    generation (parts, merges) is loop- and echo-guarded; a cut part goes into the merge trimmed.

    ``work_budget``: the most tokens the whole request may generate. The worst case (:func:`summary_work`) is
    known once the text is split, so a request over it is refused (:class:`WorkOverBudget`) before any
    generation; ``sampling.deadline`` bounds the whole run."""
    run = _Run(model, "summarize")
    budget = await _budget(engine, model, style, max_words, sampling.max_tokens)
    chunks = await split_to_fit(engine, model, text, budget)
    merger = _Merger(engine, model, run, sampling, budget)
    if work_budget is not None:
        fan_in = max(2, budget // max(1, merger.part.max_tokens + _MARGIN // 4))
        work = summary_work(len(chunks), merger.part.max_tokens, sampling.max_tokens, fan_in)
        if work > work_budget:
            raise WorkOverBudget(
                f"this text needs {len(chunks)} parts and up to {work:,} generated tokens with max_tokens="
                f"{sampling.max_tokens}; this server allows {work_budget:,} per request (send a shorter text or "
                "a smaller max_tokens)"
            )
    partials: list[str] = []
    if len(chunks) == 1:
        out: list[str] = []
        request = _request(model, prompts.summarize_messages(text, style, max_words), sampling, "summarize")
        instruction = prompts.summary_instruction(style, max_words)
        async for token in run.answer(engine, request, "answer", out, instruction):
            yield token
        summary = "".join(out).strip()
    else:
        for i, chunk in enumerate(chunks, 1):
            out = []
            request = _request(model, prompts.summarize_messages(chunk, "brief"), merger.part, "summarize")
            instruction = prompts.summary_instruction("brief")
            async for token in run.answer(engine, request, f"chunk {i}/{len(chunks)}", out, instruction):
                yield token
            partials.append("".join(out).strip())
        level = await merger.reduce(partials, sampling, style, max_words)
        out = []
        merge_messages = prompts.merge_summaries_messages(level, style, max_words)
        request = _request(model, merge_messages, sampling, "summarize")
        instruction = prompts.merge_instruction(style, max_words)
        async for token in run.answer(engine, request, "merge", out, instruction):
            yield token
        summary = "".join(out).strip()
    finish_reason = "repetition" if "repetition" in run.guards else run.finish_reason
    yield SummaryResult(
        model, summary, style, len(chunks), run.usage, run.seconds(), partials, finish_reason, run.guards
    )


async def summarize(engine: Engine, model: str, text: str, **kw) -> SummaryResult:
    return await collect(summarize_stream(engine, model, text, **kw))


# --- chat completions (the OpenAI-compatible route) ----------------------------------------------------------------


async def chat_stream(
    engine: Engine,
    model: str,
    messages: list[Message],
    sampling: Sampling = Sampling(),
    *,
    stop: tuple[str, ...] = (),
    json_schema: dict | None = None,
    grammar: str | None = None,
) -> AsyncIterator[Token | TextResult]:
    """A chat completion of the client's own ``messages`` (system/user/assistant turns, sent as they are: no MedGPT
    prompt around them), loop- and echo-guarded like an open question (mode ``chat``, the open question's repeat
    penalty unless the sampling sets one; with no fixed instruction, an echo is recognised by length alone).

    ``stop`` strings end the answer as well as the model's own end of turn (an engine given stop strings uses
    only those, and a model that never ends its turn runs to max_tokens). ``json_schema`` constrains the output
    where the engine decodes under one; elsewhere the engine refuses it (:class:`Unsupported`). ``grammar``: the
    same constraint already converted to GBNF (:func:`medgpt.schema_limits.to_grammar`), for engines that decode
    under grammars."""
    run = _Run(model, "chat")
    text: list[str] = []
    if stop:
        stop = tuple(stop) + (await engine.template(model)).stop
    request = _request(model, list(messages), sampling, "chat", stop=stop, json_schema=json_schema, grammar=grammar)
    async for token in run.answer(engine, request, "answer", text, ""):
        yield token
    yield TextResult(model, "".join(text).strip(), run.finish_reason, run.usage, run.seconds(), run.guards)
