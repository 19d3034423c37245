"""Medical multiple-choice questions (MedQA USMLE dev): accuracy, format compliance, the choice per letter,
degenerate outputs, judge score, latency.

Each item is answered twice per model when ``raw`` is on and the sampler can answer unconstrained
(``Sampler.unconstrained``): once as the gateway serves it (constrained decoding and the rescue step: what
accuracy and the judge score are about) and once unconstrained (the model as it is: what format compliance and
degenerate outputs are about, since a grammar hides both). Models are compared on
the same items with McNemar's exact test.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

from evaluator.evals.grouping import rows_per_model
from evaluator.paired import compare
from evaluator.samplers import Sampler
from evaluator.scorers import degenerate, exact
from evaluator.scorers.judge import JudgeScorer, judge_summary, with_judge_scores
from evaluator.stats import wilson_interval
from evaluator.types import MCQItem, MCQOutput, Verdict
from medgpt.prompts import format_options


class MCQEval:
    kind = "mcq"
    main_metric = "accuracy"

    def __init__(
        self, judges: JudgeScorer, *, raw: bool = True, seed: int = 0, max_tokens: int | None = None
    ):
        self.judges = judges
        self.raw = raw
        self.seed = seed
        self.max_tokens = max_tokens

    async def generate(self, sampler: Sampler, item: MCQItem) -> dict[str, MCQOutput | None]:
        served = await sampler.answer_mcq(item, constrained=True, max_tokens=self.max_tokens)
        raw = None
        if self.raw and sampler.unconstrained:
            raw = await sampler.answer_mcq(item, constrained=False, max_tokens=self.max_tokens)
        return {"served": served, "raw": raw}

    @staticmethod
    def degenerate_scores(item: MCQItem, outputs: dict[str, MCQOutput | None]) -> dict:
        """On the unconstrained text when there is one (what the model writes by itself), else on the
        served answer."""
        raw, served = outputs["raw"], outputs["served"]
        out, text = (raw, raw.raw_text) if raw is not None else (served, served.served_text(item.options))
        prompt_input = f"{item.question}\n{format_options(item.options)}"
        return degenerate.of(out, text, prompt_input, degenerate.mcq_instruction())

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
            **self.degenerate_scores(item, outputs),
            "latency_s": round(served.seconds, 4),
            "tokens_per_s": exact.tokens_per_second(served.completion_tokens, served.seconds),
        }

    async def judge(self, item: MCQItem, outputs: dict[str, MCQOutput | None]) -> list[Verdict]:
        return await self.judges.score_mcq(item, outputs["served"])

    def row(self, item: MCQItem, model: str, outputs: dict, scores: dict, verdicts: list[Verdict]) -> dict:
        return {
            "eval": self.kind,
            "item_id": item.id,
            "model": model,
            "question": item.question,
            "options": item.options,
            "reference": {"choice": item.answer, "answer": item.answer_text},
            "served_text": outputs["served"].served_text(item.options),
            "output": asdict(outputs["served"]),
            "raw_output": asdict(outputs["raw"]) if outputs["raw"] is not None else None,
            "scores": with_judge_scores(scores, verdicts),
            "judges": [asdict(v) for v in verdicts],
        }

    def summarize(self, rows: list[dict], models: list[str]) -> dict:
        per_model = {}
        for model, mine, s in rows_per_model(rows, models):
            choices = Counter(r["output"]["choice"] or "none" for r in mine)
            # Ties go to the first letter in A-J order, so the same rows always name the same letter.
            letters = [(c, n) for c, n in sorted(choices.items()) if c != "none"]
            top_letter, top_count = max(letters, key=lambda cn: cn[1], default=(None, 0))
            per_model[model] = {
                "n": len(mine),
                "accuracy": exact.proportion([x["correct"] for x in s]).as_dict(),
                "format_compliance": exact.proportion([x["format_ok"] for x in s]).as_dict(),
                "raw_accuracy": exact.proportion([x["raw_correct"] for x in s]).as_dict(),
                "served_well_formed": exact.proportion([x["served_well_formed"] for x in s]).as_dict(),
                "rescued": sum(1 for x in s if x["rescued"]),
                # A model that always names the same letter scores that letter's share of the answer key:
                # the distribution shows position bias at a glance.
                "choices": dict(sorted(choices.items())),
                "answer_key": dict(sorted(Counter(r["reference"]["choice"] for r in mine).items())),
                # The most chosen letter's share of all questions (the "no letter over 35%" gate).
                "max_letter_share": {
                    "letter": top_letter,
                    **wilson_interval(top_count, len(mine)).as_dict(),
                },
                "degenerate": degenerate.summarize(s),
                "degenerate_on": "raw" if all(r.get("raw_output") for r in mine) else "served",
                "errors": sum(1 for x in s if x["error"]),
                "judge": judge_summary([x["judge"] for x in s], seed=self.seed),
                "latency": exact.latency_summary(
                    [r["output"]["seconds"] for r in mine], [r["output"]["completion_tokens"] for r in mine]
                ),
            }
        return {
            "eval": self.kind,
            "main_metric": self.main_metric,
            "models": per_model,
            "comparisons": self.compare(rows, models, self.seed),
        }

    @staticmethod
    def compare(rows: list[dict], models: list[str], seed: int = 0) -> list[dict]:
        """McNemar for every pair of models on the items both answered: accuracy, format compliance,
        degenerate outputs; Wilcoxon on the judge score."""
        return compare(
            rows,
            models,
            binary={"accuracy": "correct", "format_compliance": "format_ok", "degenerate": "degenerate"},
            scores={"judge": "judge"},
            seed=seed,
        )
