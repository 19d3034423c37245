"""The tiny sampler interface: what the evaluator needs from a model under test, and its two implementations.

- :class:`CoreSampler` goes through ``medgpt.tasks`` over a core engine: the same prompts, grammar, rescue
  step and chunked summaries as the gateway, in-process.
- :class:`GatewaySampler` asks a running gateway over HTTP (``--url``), so a deployed container is measured as
  it serves. The gateway reports no raw text or format flag, so format compliance is unavailable there (None).

Failures become ``error`` on the output (the row is kept and counted as wrong), so one bad item never kills a
run.
"""

from __future__ import annotations

import time
from typing import Protocol

from evaluator.types import MCQItem, MCQOutput, SummaryItem, SummaryOutput


class Sampler(Protocol):
    #: The label the report uses (the model name).
    name: str

    async def answer_mcq(self, item: MCQItem, constrained: bool = True) -> MCQOutput: ...

    async def summarize(self, item: SummaryItem) -> SummaryOutput: ...

    async def aclose(self) -> None: ...


class CoreSampler:
    """A model served by a core engine (llama.cpp in-process, Ollama, OpenAI-compatible) through tasks."""

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
        owns_engine: bool = False,
    ):
        self.engine = engine
        self.name = model
        self.max_tokens = max_tokens
        self.summary_max_tokens = summary_max_tokens
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

    async def answer_mcq(self, item: MCQItem, constrained: bool = True) -> MCQOutput:
        from medgpt.engines.base import EngineError
        from medgpt.tasks import answer_mcq

        started = time.perf_counter()
        try:
            r = await answer_mcq(
                self.engine,
                self.name,
                item.question,
                item.options,
                sampling=self._sampling(self.max_tokens),
                constrained=constrained,
            )
        except EngineError as exc:
            return MCQOutput(
                self.name, seconds=time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}"
            )
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
        )

    async def summarize(self, item: SummaryItem) -> SummaryOutput:
        from medgpt.engines.base import EngineError
        from medgpt.tasks import summarize

        started = time.perf_counter()
        try:
            r = await summarize(
                self.engine,
                self.name,
                item.text,
                style=self.summary_style,
                sampling=self._sampling(self.summary_max_tokens),
            )
        except EngineError as exc:
            return SummaryOutput(
                self.name, seconds=time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}"
            )
        return SummaryOutput(
            model=self.name,
            summary=r.summary,
            chunks=r.chunks,
            prompt_tokens=r.usage.prompt_tokens,
            completion_tokens=r.usage.completion_tokens,
            seconds=r.seconds,
        )

    async def aclose(self) -> None:
        if self.owns_engine:
            await self.engine.aclose()


class GatewaySampler:
    """A model behind a running MedGPT gateway: ``POST /ask`` and ``POST /summarize`` with httpx."""

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
        client=None,
    ):
        import httpx

        self.name = model
        self.max_tokens = max_tokens
        self.summary_max_tokens = summary_max_tokens
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

    async def answer_mcq(self, item: MCQItem, constrained: bool = True) -> MCQOutput:
        if not constrained:
            # The gateway always serves the constrained answer; the raw model is measured in-process only.
            return MCQOutput(self.name, error="unconstrained answers are not available over HTTP")
        data, error, elapsed = await self._post(
            "/ask", {"question": item.question, "options": item.options, **self._common(self.max_tokens)}
        )
        if error:
            return MCQOutput(self.name, seconds=elapsed, error=error)
        analysis, answer = data.get("analysis") or "", data.get("answer") or ""
        usage = data.get("usage") or {}
        timings = data.get("timings") or {}
        return MCQOutput(
            model=self.name,
            # What the gateway served, in the prompt format, so the judge sees the same shape as in-process.
            raw_text=f"<analysis>{analysis}</analysis>\n<answer>{answer}</answer>",
            analysis=analysis,
            answer=answer,
            choice=data.get("choice"),
            well_formed=data.get("well_formed"),
            rescued=bool(data.get("rescued")),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            seconds=float(timings["total_ms"]) / 1000 if "total_ms" in timings else elapsed,
        )

    async def summarize(self, item: SummaryItem) -> SummaryOutput:
        body = {"text": item.text, "style": self.summary_style, **self._common(self.summary_max_tokens)}
        data, error, elapsed = await self._post("/summarize", body)
        if error:
            return SummaryOutput(self.name, seconds=elapsed, error=error)
        usage = data.get("usage") or {}
        timings = data.get("timings") or {}
        return SummaryOutput(
            model=self.name,
            summary=data.get("summary", ""),
            chunks=int(data.get("chunks", 1)),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            seconds=float(timings["total_ms"]) / 1000 if "total_ms" in timings else elapsed,
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
