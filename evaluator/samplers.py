"""The tiny sampler interface: what the evaluator needs from a model under test, and its two implementations.

- :class:`CoreSampler` goes through ``medgpt.tasks`` over a core engine: the same prompts, grammar, rescue
  step and chunked summaries as the gateway, in-process.
- :class:`GatewaySampler` asks a running gateway over HTTP (``--url``), so a deployed container is measured as
  it serves. The gateway reports no raw text or format flag, so format compliance is unavailable there (None).

Four methods, one per mode the gateway serves: ``answer_mcq``, ``summarize``, ``answer_note`` (a question
about a clinical text: ``/ask`` with ``context``) and ``answer_open`` (``/ask`` with the question alone). The
eval passes the answer length (and a summary's style) per call, because they differ per dataset.

Failures become ``error`` on the output (the row is kept and counted as wrong), so one bad item never kills a
run.
"""

from __future__ import annotations

import time
from typing import Protocol

from evaluator.types import MCQItem, MCQOutput, NoteQAItem, OpenItem, SummaryItem, SummaryOutput, TextOutput
from medgpt.prompts import mcq_target


class Sampler(Protocol):
    #: The label the report uses (the model name).
    name: str
    #: Whether ``answer_mcq(constrained=False)`` is available: the model's own text, without grammar or rescue
    #: (what format compliance is measured on). A running gateway serves only the constrained answer.
    unconstrained: bool

    async def answer_mcq(
        self, item: MCQItem, constrained: bool = True, max_tokens: int | None = None
    ) -> MCQOutput: ...

    async def summarize(
        self, item: SummaryItem, style: str | None = None, max_tokens: int | None = None
    ) -> SummaryOutput: ...

    async def answer_note(self, item: NoteQAItem, max_tokens: int | None = None) -> TextOutput: ...

    async def answer_open(self, item: OpenItem, max_tokens: int | None = None) -> TextOutput: ...

    async def aclose(self) -> None: ...


def _failed(cls, model: str, started: float, exc: Exception):
    """The record of a failed call; an answer the core refused as an echo of the prompt (``EchoedPrompt``,
    the gateway's 502) is marked ``refused="echo"``: a degenerate output, not a missing one."""
    from medgpt import tasks

    echoed = isinstance(exc, getattr(tasks, "EchoedPrompt", ()))
    return cls(
        model,
        seconds=time.perf_counter() - started,
        error=f"{type(exc).__name__}: {exc}",
        refused="echo" if echoed else None,
    )


def _text_output(r) -> TextOutput:
    """A ``medgpt.tasks.TextResult`` as the evaluator's record (``finish_reason`` if the result has one)."""
    return TextOutput(
        model=r.model,
        text=r.text,
        prompt_tokens=r.usage.prompt_tokens,
        completion_tokens=r.usage.completion_tokens,
        seconds=r.seconds,
        finish_reason=getattr(r, "finish_reason", None),
    )


class CoreSampler:
    """A model served by a core engine (llama.cpp in-process, Ollama, OpenAI-compatible) through tasks."""

    unconstrained = True

    def __init__(
        self,
        engine,
        model: str,
        *,
        max_tokens: int = 256,
        summary_max_tokens: int = 192,
        temperature: float = 0.0,
        seed: int | None = None,
        timeout: float | None = None,
        summary_style: str = "brief",
        text_max_tokens: int = 128,
        owns_engine: bool = False,
    ):
        self.engine = engine
        self.name = model
        self.max_tokens = max_tokens
        self.summary_max_tokens = summary_max_tokens
        self.text_max_tokens = text_max_tokens
        self.temperature = temperature
        self.seed = seed
        self.timeout = timeout
        self.summary_style = summary_style
        self.owns_engine = owns_engine

    def _sampling(self, max_tokens: int):
        from medgpt.tasks import Sampling

        return Sampling(
            max_tokens=max_tokens, temperature=self.temperature, seed=self.seed, timeout=self.timeout
        )

    async def answer_mcq(
        self, item: MCQItem, constrained: bool = True, max_tokens: int | None = None
    ) -> MCQOutput:
        from medgpt.engines.base import EngineError
        from medgpt.tasks import answer_mcq

        started = time.perf_counter()
        try:
            r = await answer_mcq(
                self.engine,
                self.name,
                item.question,
                item.options,
                sampling=self._sampling(max_tokens or self.max_tokens),
                constrained=constrained,
            )
        except EngineError as exc:
            return _failed(MCQOutput, self.name, started, exc)
        return MCQOutput(
            model=self.name,
            raw_text=r.raw_text,
            analysis=r.analysis,
            answer=r.answer,
            choice=r.choice,
            well_formed=r.well_formed,
            rescued=r.rescued,
            prompt_tokens=r.usage.prompt_tokens,
            completion_tokens=r.usage.completion_tokens,
            seconds=r.seconds,
            finish_reason=getattr(r, "finish_reason", None),
        )

    async def summarize(
        self, item: SummaryItem, style: str | None = None, max_tokens: int | None = None
    ) -> SummaryOutput:
        from medgpt.engines.base import EngineError
        from medgpt.tasks import summarize

        started = time.perf_counter()
        try:
            r = await summarize(
                self.engine,
                self.name,
                item.text,
                style=style or self.summary_style,
                sampling=self._sampling(max_tokens or self.summary_max_tokens),
            )
        except EngineError as exc:
            return _failed(SummaryOutput, self.name, started, exc)
        return SummaryOutput(
            model=self.name,
            summary=r.summary,
            chunks=r.chunks,
            prompt_tokens=r.usage.prompt_tokens,
            completion_tokens=r.usage.completion_tokens,
            seconds=r.seconds,
            finish_reason=getattr(r, "finish_reason", None),
        )

    async def answer_note(self, item: NoteQAItem, max_tokens: int | None = None) -> TextOutput:
        from medgpt.engines.base import EngineError
        from medgpt.tasks import answer_note

        started = time.perf_counter()
        try:
            r = await answer_note(
                self.engine,
                self.name,
                item.note,
                item.question,
                sampling=self._sampling(max_tokens or self.text_max_tokens),
            )
        except EngineError as exc:
            return _failed(TextOutput, self.name, started, exc)
        return _text_output(r)

    async def answer_open(self, item: OpenItem, max_tokens: int | None = None) -> TextOutput:
        from medgpt.engines.base import EngineError
        from medgpt.tasks import answer_open

        started = time.perf_counter()
        try:
            r = await answer_open(
                self.engine,
                self.name,
                item.question,
                sampling=self._sampling(max_tokens or self.text_max_tokens),
            )
        except EngineError as exc:
            return _failed(TextOutput, self.name, started, exc)
        return _text_output(r)

    async def aclose(self) -> None:
        if self.owns_engine:
            await self.engine.aclose()


#: The words of the gateway's 502 detail when the core refused an answer that echoed the prompt.
ECHO_REFUSAL = "echoed the prompt"


def _seconds(data: dict, elapsed: float) -> float:
    """The gateway's own timing of the request when it reports one (excludes HTTP), else the wall time."""
    timings = data.get("timings") or {}
    return float(timings["total_ms"]) / 1000 if "total_ms" in timings else elapsed


class GatewaySampler:
    """A model behind a running MedGPT gateway: ``POST /ask`` and ``POST /summarize`` with httpx."""

    #: The gateway always serves the constrained answer; the raw model is measured in-process only.
    unconstrained = False

    def __init__(
        self,
        url: str,
        model: str,
        *,
        max_tokens: int = 256,
        summary_max_tokens: int = 192,
        temperature: float = 0.0,
        seed: int | None = None,
        timeout: float = 300.0,
        summary_style: str = "brief",
        text_max_tokens: int = 128,
        client=None,
    ):
        import httpx

        self.name = model
        self.max_tokens = max_tokens
        self.summary_max_tokens = summary_max_tokens
        self.text_max_tokens = text_max_tokens
        self.temperature = temperature
        self.seed = seed
        self.summary_style = summary_style
        self._client = client or httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout)
        self._owns_client = client is None

    def _common(self, max_tokens: int) -> dict:
        body = {"model": self.name, "max_tokens": max_tokens, "temperature": self.temperature}
        if self.seed is not None:
            body["seed"] = self.seed
        return body

    async def _post(self, path: str, body: dict) -> tuple[dict | None, str | None, float]:
        import httpx

        started = time.perf_counter()
        try:
            resp = await self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}", time.perf_counter() - started
        elapsed = time.perf_counter() - started
        if resp.status_code != 200:
            return None, f"HTTP {resp.status_code}: {resp.text[:300]}", elapsed
        return resp.json(), None, elapsed

    @staticmethod
    def _refused(error: str | None) -> str | None:
        """The gateway answers an echo refused by the core's guard with a 502 whose detail says so (the
        ``EchoedPrompt`` message): a degenerate output, counted as an echo."""
        return "echo" if error and error.startswith("HTTP 502") and ECHO_REFUSAL in error else None

    async def answer_mcq(
        self, item: MCQItem, constrained: bool = True, max_tokens: int | None = None
    ) -> MCQOutput:
        if not constrained:
            raise ValueError("a gateway serves only constrained answers (GatewaySampler.unconstrained)")
        body = {"question": item.question, "options": item.options}
        body |= self._common(max_tokens or self.max_tokens)
        data, error, elapsed = await self._post("/ask", body)
        if error:
            return MCQOutput(self.name, seconds=elapsed, error=error, refused=self._refused(error))
        analysis, answer, choice = data.get("analysis") or "", data.get("answer") or "", data.get("choice")
        usage = data.get("usage") or {}
        return MCQOutput(
            model=self.name,
            # What the gateway served, in the prompt format, so the judge sees the same shape as in-process.
            raw_text=mcq_target(analysis, choice, item.options) if choice in item.options else analysis,
            analysis=analysis,
            answer=answer,
            choice=choice,
            well_formed=data.get("well_formed"),
            rescued=bool(data.get("rescued")),
            finish_reason=data.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            seconds=_seconds(data, elapsed),
        )

    async def summarize(
        self, item: SummaryItem, style: str | None = None, max_tokens: int | None = None
    ) -> SummaryOutput:
        body = {"text": item.text, "style": style or self.summary_style}
        data, error, elapsed = await self._post(
            "/summarize", {**body, **self._common(max_tokens or self.summary_max_tokens)}
        )
        if error:
            return SummaryOutput(self.name, seconds=elapsed, error=error, refused=self._refused(error))
        usage = data.get("usage") or {}
        return SummaryOutput(
            model=self.name,
            summary=data.get("summary", ""),
            chunks=int(data.get("chunks", 1)),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            seconds=_seconds(data, elapsed),
            finish_reason=data.get("finish_reason"),
        )

    async def _ask_text(self, body: dict, max_tokens: int | None) -> TextOutput:
        data, error, elapsed = await self._post(
            "/ask", {**body, **self._common(max_tokens or self.text_max_tokens)}
        )
        if error:
            return TextOutput(self.name, seconds=elapsed, error=error, refused=self._refused(error))
        usage = data.get("usage") or {}
        return TextOutput(
            model=self.name,
            text=data.get("answer") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            seconds=_seconds(data, elapsed),
            finish_reason=data.get("finish_reason"),
        )

    async def answer_note(self, item: NoteQAItem, max_tokens: int | None = None) -> TextOutput:
        """``/ask`` with ``context``: the gateway's note-QA mode (``medgpt.tasks.answer_note``'s prompt)."""
        return await self._ask_text({"question": item.question, "context": item.note}, max_tokens)

    async def answer_open(self, item: OpenItem, max_tokens: int | None = None) -> TextOutput:
        return await self._ask_text({"question": item.question}, max_tokens)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
