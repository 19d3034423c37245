"""Clinical summarization (MTSamples descriptions, MTS-Dialog sections, ACI-Bench notes): ROUGE-1/2/L against
the human reference, and a judge's faithfulness score (reference-guided)."""

from __future__ import annotations

from dataclasses import asdict

from evaluator.samplers import Sampler
from evaluator.scorers import exact
from evaluator.scorers.judge import JudgeScorer, judge_summary, mean_score
from evaluator.scorers.rouge import ROUGE_TYPES, Rouge
from evaluator.stats import bootstrap_mean
from evaluator.types import SummaryItem, SummaryOutput, Verdict


class SummaryEval:
    kind = "summary"

    def __init__(self, judges: JudgeScorer, *, seed: int = 0):
        self.judges = judges
        self.seed = seed
        self.rouge = Rouge()

    async def generate(self, sampler: Sampler, item: SummaryItem) -> dict[str, SummaryOutput]:
        return {"served": await sampler.summarize(item)}

    def exact_scores(self, item: SummaryItem, outputs: dict[str, SummaryOutput]) -> dict:
        out = outputs["served"]
        rouge = self.rouge.score(item.reference, out.summary if out.error is None else "")
        return {
            **rouge,
            "error": out.error is not None,
            "chunks": out.chunks,
            "latency_s": round(out.seconds, 4),
            "tokens_per_s": exact.tokens_per_second(out.completion_tokens, out.seconds),
        }

    async def judge(self, item: SummaryItem, outputs: dict[str, SummaryOutput]) -> list[Verdict]:
        return await self.judges.score_summary(item, outputs["served"])

    def row(
        self, item: SummaryItem, model: str, outputs: dict, scores: dict, verdicts: list[Verdict]
    ) -> dict:
        return {
            "eval": self.kind,
            "item_id": item.id,
            "model": model,
            "source": item.source,
            "text": item.text,
            "reference": item.reference,
            "output": asdict(outputs["served"]),
            "raw_output": None,
            "scores": {
                **scores,
                "judge": mean_score(verdicts),
                **{f"judge.{v.judge}": v.score for v in verdicts},
            },
            "judges": [asdict(v) for v in verdicts],
        }

    def summarize(self, rows: list[dict], models: list[str]) -> dict:
        per_model = {}
        for model in models:
            mine = [r for r in rows if r["model"] == model]
            if not mine:
                continue
            s = [r["scores"] for r in mine]
            per_model[model] = {
                "n": len(mine),
                **{t: bootstrap_mean([x[t] for x in s], seed=self.seed).as_dict() for t in ROUGE_TYPES},
                "errors": sum(1 for x in s if x["error"]),
                "judge": judge_summary([x["judge"] for x in s], seed=self.seed),
                "latency": exact.latency_summary(
                    [r["output"]["seconds"] for r in mine], [r["output"]["completion_tokens"] for r in mine]
                ),
            }
        return {"eval": self.kind, "models": per_model, "comparisons": []}
