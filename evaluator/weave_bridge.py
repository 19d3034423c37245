"""The same evals as a ``weave.Evaluation``: the model under test is a ``weave.Model`` and the scorers are
``weave.Scorer`` s, so a configured run appears in W&B Weave as the seed's did.

The Weave scorers call the very functions the local run calls (``ev.exact_scores``, ``ev.judge``) on the
output the Weave model returned, and also hand each item's scores to ``on_row``: Weave keeps per-row results
on its server, the local report needs them here. Weave is imported only on this path.

What goes to W&B is de-identified (:mod:`evaluator.deid`): the dataset rows, and every op's logged inputs and
outputs through Weave's ``postprocess_inputs``/``postprocess_output`` hooks, which change the trace only,
never the values the scorers compute on. The model under test and the local judges still see the text as it
is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from evaluator.deid import scrub_text
from evaluator.types import MCQOutput, SummaryOutput, TextOutput, Verdict

#: The output record of each eval kind (the Weave model returns plain dicts; the scorers rebuild these).
OUTPUT_CLASS = {"mcq": MCQOutput, "summary": SummaryOutput, "note_qa": TextOutput, "open": TextOutput}


def scrub_deep(value):
    """Every string inside ``value`` (dicts, lists, tuples) de-identified; other values unchanged."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: scrub_deep(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_deep(v) for v in value]
    return value


def _outputs_from(kind: str, output: dict) -> dict:
    cls = OUTPUT_CLASS[kind]
    return {k: (cls(**v) if v is not None else None) for k, v in output.items()}


def _dataset_row(kind: str, item) -> dict:
    if kind == "mcq":
        row = {"question": item.question, "options": item.options, "answer": item.answer}
    elif kind == "note_qa":
        row = {"note": item.note, "question": item.question, "reference": item.reference}
    elif kind == "open":
        row = {"question": item.question}
    else:
        row = {"text": item.text, "reference": item.reference}
    return {"item_id": item.id, **scrub_deep(row)}


def _classes():
    """Weave classes, built on first use so that importing the evaluator never imports weave."""
    # Weave reports its own errors to Sentry (a network call, with stack traces that may hold clinical text)
    # unless told not to; an explicit WANDB_ERROR_REPORTING in the environment still wins.
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    import weave
    from pydantic import PrivateAttr

    logged = dict(postprocess_inputs=scrub_deep, postprocess_output=scrub_deep)

    class SamplerModel(weave.Model):
        """The model under test: one call of the eval's ``generate`` (served answer, raw answer for MCQs)."""

        model_name: str
        eval_kind: str
        _ev: Any = PrivateAttr()
        _sampler: Any = PrivateAttr()
        _items: dict = PrivateAttr()

        @weave.op(**logged)
        async def predict(self, item_id: str) -> dict:
            outputs = await self._ev.generate(self._sampler, self._items[item_id])
            return {k: asdict(v) if v is not None else None for k, v in outputs.items()}

    class ExactScorer(weave.Scorer):
        """The eval's exact scores: accuracy / format compliance (MCQ), ROUGE (summaries, note QA), decision
        (PubMedQA), degenerate flags and latency (every mode)."""

        eval_kind: str
        _ev: Any = PrivateAttr()
        _items: dict = PrivateAttr()
        _collect: Any = PrivateAttr()

        @weave.op(**logged)
        def score(self, *, output: dict, item_id: str) -> dict:
            scores = self._ev.exact_scores(self._items[item_id], _outputs_from(self.eval_kind, output))
            self._collect(item_id, "scores", scores)
            return scores

    class LLMJudgeScorer(weave.Scorer):
        """Reference-guided LLM judge(s): the mean score and each judge's score and explanation."""

        eval_kind: str
        _ev: Any = PrivateAttr()
        _items: dict = PrivateAttr()
        _collect: Any = PrivateAttr()

        @weave.op(**logged)
        async def score(self, *, output: dict, item_id: str) -> dict:
            verdicts: list[Verdict] = await self._ev.judge(
                self._items[item_id], _outputs_from(self.eval_kind, output)
            )
            self._collect(item_id, "verdicts", verdicts)
            scored = [v.score for v in verdicts if v.score is not None]
            return {
                "judge": sum(scored) / len(scored) if scored else None,
                "verdicts": [
                    {"judge": v.judge, "score": v.score, "explanation": v.explanation} for v in verdicts
                ],
            }

    return weave, SamplerModel, ExactScorer, LLMJudgeScorer


async def evaluate_with_weave(
    ev, sampler, items: list, *, dataset_name: str, on_row: Callable[[dict], None]
) -> tuple[list[dict], dict]:
    """Run ``ev`` on ``items`` for ``sampler`` as a ``weave.Evaluation``; return the local rows and Weave's
    summary."""
    weave, SamplerModel, ExactScorer, LLMJudgeScorer = _classes()
    by_id = {item.id: item for item in items}
    collected: dict[str, dict] = {item.id: {} for item in items}

    def collect(item_id: str, key: str, value) -> None:
        """Keep a scorer's result; once an item has its output and both scores, stream its row (progress bar,
        results.partial.jsonl) as the local path does."""
        got = collected[item_id]
        got[key] = value
        if "row" not in got and all(k in got for k in ("outputs", "scores", "verdicts")):
            got["row"] = ev.row(by_id[item_id], sampler.name, got["outputs"], got["scores"], got["verdicts"])
            on_row(got["row"])

    model = SamplerModel(name=sampler.name.replace(":", "-"), model_name=sampler.name, eval_kind=ev.kind)
    model._ev, model._sampler, model._items = ev, sampler, by_id
    scorers = []
    for cls in (ExactScorer, LLMJudgeScorer):
        scorer = cls(eval_kind=ev.kind)
        scorer._ev, scorer._items, scorer._collect = ev, by_id, collect
        scorers.append(scorer)

    # The predict op's output is only visible to the scorers; keep it for the rows too.
    original_generate = ev.generate

    async def generate_and_keep(s, item):
        outputs = await original_generate(s, item)
        collected[item.id]["outputs"] = outputs
        return outputs

    model._ev = _GenerateProxy(ev, generate_and_keep)
    evaluation = weave.Evaluation(
        name=f"medgpt-{ev.kind}-{dataset_name}",
        dataset=[_dataset_row(ev.kind, item) for item in items],
        scorers=scorers,
    )
    weave_summary = await evaluation.evaluate(model)

    rows = []
    for item in items:
        got = collected[item.id]
        if "row" in got:
            rows.append(got["row"])
            continue
        outputs = got.get("outputs")
        if outputs is None:  # predict raised: keep the item, as the local path does
            cls = OUTPUT_CLASS[ev.kind]
            outputs = {"served": cls(sampler.name, error="no output from the Weave model")}
            if ev.kind == "mcq":
                outputs["raw"] = None
        scores = got.get("scores") or ev.exact_scores(item, outputs)
        row = ev.row(item, sampler.name, outputs, scores, got.get("verdicts", []))
        on_row(row)
        rows.append(row)
    return rows, _jsonable(weave_summary)


class _GenerateProxy:
    """The eval, with ``generate`` replaced; everything else passes through."""

    def __init__(self, ev, generate):
        self._ev = ev
        self.generate = generate

    def __getattr__(self, name):
        return getattr(self._ev, name)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
