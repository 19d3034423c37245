"""Open medical questions (``/ask`` with the question alone), MEDIQA consumer questions: no reference answer,
so the measures are the degenerate-output rate and, when a judge is configured, a reference-free judge score.

Models are compared with McNemar's exact test on the degenerate flags and the Wilcoxon signed-rank test on the
judge score.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

from evaluator.evals.grouping import rows_per_model
from evaluator.paired import compare
from evaluator.samplers import Sampler
from evaluator.scorers import degenerate, exact
from evaluator.scorers.judge import JudgeScorer, judge_summary, with_judge_scores
from evaluator.types import OpenItem, TextOutput, Verdict


class OpenEval:
    kind = "open"

    def __init__(self, judges: JudgeScorer, *, seed: int = 0, max_tokens: int | None = None):
        self.judges = judges
        self.seed = seed
        self.max_tokens = max_tokens

    async def generate(self, sampler: Sampler, item: OpenItem) -> dict[str, TextOutput]:
        return {"served": await sampler.answer_open(item, max_tokens=self.max_tokens)}

    def exact_scores(self, item: OpenItem, outputs: dict[str, TextOutput]) -> dict:
        out = outputs["served"]
        return {
            "error": out.error is not None,
            **degenerate.of(out, out.text, item.question, degenerate.open_instruction()),
            "latency_s": round(out.seconds, 4),
            "tokens_per_s": exact.tokens_per_second(out.completion_tokens, out.seconds),
        }

    async def judge(self, item: OpenItem, outputs: dict[str, TextOutput]) -> list[Verdict]:
        return await self.judges.score_open(item, outputs["served"])

    def row(self, item: OpenItem, model: str, outputs: dict, scores: dict, verdicts: list[Verdict]) -> dict:
        return {
            "eval": self.kind,
            "item_id": item.id,
            "model": model,
            "source": item.source,
            "question": item.question,
            "reference": None,
            "output": asdict(outputs["served"]),
            "raw_output": None,
            "scores": with_judge_scores(scores, verdicts),
            "judges": [asdict(v) for v in verdicts],
        }

    def summarize(self, rows: list[dict], models: list[str]) -> dict:
        per_model = {}
        for model, mine, s in rows_per_model(rows, models):
            per_model[model] = {
                "n": len(mine),
                "degenerate": degenerate.summarize(s),
                "errors": sum(1 for x in s if x["error"]),
                "finish_reasons": dict(Counter(str(r["output"].get("finish_reason")) for r in mine)),
                "judge": judge_summary([x["judge"] for x in s], seed=self.seed),
                "latency": exact.latency_summary(
                    [r["output"]["seconds"] for r in mine], [r["output"]["completion_tokens"] for r in mine]
                ),
            }
        judged = any(m["judge"]["estimate"] is not None for m in per_model.values())
        return {
            "eval": self.kind,
            # Without a judge there is no quality score for an answer with no reference: the degenerate rate
            # is the only figure.
            "main_metric": "judge" if judged else None,
            "models": per_model,
            "comparisons": compare(
                rows, models, binary={"degenerate": "degenerate"}, scores={"judge": "judge"}, seed=self.seed
            ),
        }
