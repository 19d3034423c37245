"""Medical multiple-choice questions (MedQA USMLE dev): accuracy, format compliance, judge score, latency.

Each item is answered twice per model when ``raw`` is on: once as the gateway serves it (constrained decoding
and the rescue step: what accuracy and the judge score are about) and once unconstrained (the model as it is:
what format compliance is about). Two models are compared on the same items with McNemar's paired test.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from itertools import combinations

from evaluator.samplers import Sampler
from evaluator.scorers import exact
from evaluator.scorers.judge import JudgeScorer, judge_summary, mean_score
from evaluator.stats import mcnemar
from evaluator.types import MCQItem, MCQOutput, Verdict


class MCQEval:
    kind = "mcq"

    def __init__(self, judges: JudgeScorer, *, raw: bool = True, seed: int = 0):
        self.judges = judges
        self.raw = raw
        self.seed = seed

    async def generate(self, sampler: Sampler, item: MCQItem) -> dict[str, MCQOutput | None]:
        served = await sampler.answer_mcq(item, constrained=True)
        raw = await sampler.answer_mcq(item, constrained=False) if self.raw else None
        if raw is not None and raw.error == "unconstrained answers are not available over HTTP":
            raw = None
        return {"served": served, "raw": raw}

    def exact_scores(self, item: MCQItem, outputs: dict[str, MCQOutput | None]) -> dict:
        served, raw = outputs["served"], outputs["raw"]
        return {
            "correct": exact.choice_correct(item, served),
            # Format compliance is about the model as it is; without a raw run it is unknown, not the
            # grammar's 100%.
            "format_ok": exact.format_compliant(item, raw) if raw is not None else None,
            "raw_correct": exact.choice_correct(item, raw) if raw is not None else None,
            "served_well_formed": served.well_formed if served.error is None else False,
            "rescued": served.rescued,
            "error": served.error is not None,
            "latency_s": round(served.seconds, 4),
            "tokens_per_s": exact.tokens_per_second(served.completion_tokens, served.seconds),
        }

    async def judge(self, item: MCQItem, outputs: dict[str, MCQOutput | None]) -> list[Verdict]:
        return await self.judges.score_mcq(item, outputs["served"])

    def row(self, item: MCQItem, model: str, outputs: dict, scores: dict, verdicts: list[Verdict]) -> dict:
        judge_scores = {f"judge.{v.judge}": v.score for v in verdicts}
        return {
            "eval": self.kind,
            "item_id": item.id,
            "model": model,
            "question": item.question,
            "options": item.options,
            "reference": {"choice": item.answer, "answer": item.answer_text},
            "served_text": outputs["served"].served_text(),
            "output": asdict(outputs["served"]),
            "raw_output": asdict(outputs["raw"]) if outputs["raw"] is not None else None,
            "scores": {**scores, "judge": mean_score(verdicts), **judge_scores},
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
                "accuracy": exact.proportion([x["correct"] for x in s]).as_dict(),
                "format_compliance": exact.proportion([x["format_ok"] for x in s]).as_dict(),
                "raw_accuracy": exact.proportion([x["raw_correct"] for x in s]).as_dict(),
                "served_well_formed": exact.proportion([x["served_well_formed"] for x in s]).as_dict(),
                "rescued": sum(1 for x in s if x["rescued"]),
                # A model that always names the same letter scores that letter's share of the answer key:
                # the distribution shows position bias at a glance.
                "choices": dict(sorted(Counter(r["output"]["choice"] or "none" for r in mine).items())),
                "answer_key": dict(sorted(Counter(r["reference"]["choice"] for r in mine).items())),
                "errors": sum(1 for x in s if x["error"]),
                "judge": judge_summary([x["judge"] for x in s], seed=self.seed),
                "latency": exact.latency_summary(
                    [r["output"]["seconds"] for r in mine], [r["output"]["completion_tokens"] for r in mine]
                ),
            }
        return {"eval": self.kind, "models": per_model, "comparisons": self.compare(rows, models)}

    @staticmethod
    def compare(rows: list[dict], models: list[str]) -> list[dict]:
        """McNemar for every pair of models, on the items both answered (accuracy, and format compliance)."""
        by = {(r["model"], r["item_id"]): r["scores"] for r in rows}
        out = []
        for a, b in combinations(models, 2):
            common = sorted({i for m, i in by if m == a} & {i for m, i in by if m == b})
            if not common:
                continue
            entry = {"a": a, "b": b, "n": len(common)}
            entry["accuracy"] = mcnemar(
                [bool(by[(a, i)]["correct"]) for i in common], [bool(by[(b, i)]["correct"]) for i in common]
            ).as_dict()
            known = [
                i
                for i in common
                if by[(a, i)]["format_ok"] is not None and by[(b, i)]["format_ok"] is not None
            ]
            if known:
                entry["format_compliance"] = mcnemar(
                    [by[(a, i)]["format_ok"] for i in known], [by[(b, i)]["format_ok"] for i in known]
                ).as_dict()
            out.append(entry)
        return out
