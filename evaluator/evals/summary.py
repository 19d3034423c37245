"""Clinical summarization (MTS-Dialog sections, ACI-Bench notes, MTSamples descriptions): ROUGE-1/2/L against
the human reference, degenerate outputs, and a judge's faithfulness score (reference-guided).

Each row is summarized in the style its reference was written in (``summary.styles`` by the row's source:
MTS-Dialog references are a few sentences, ACI-Bench references full notes with sections), unless its dataset
names one style. Models are compared with the Wilcoxon signed-rank test on ROUGE-L per item and McNemar's
exact test on the degenerate flags.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict

from evaluator.evals.grouping import rows_per_model
from evaluator.paired import compare
from evaluator.samplers import Sampler
from evaluator.scorers import degenerate, exact
from evaluator.scorers.judge import JudgeScorer, judge_summary, with_judge_scores
from evaluator.scorers.rouge import ROUGE_TYPES, Rouge
from evaluator.stats import bootstrap_mean
from evaluator.types import SummaryItem, SummaryOutput, Verdict


class SummaryEval:
    kind = "summary"
    main_metric = "rougeL"

    def __init__(
        self,
        judges: JudgeScorer,
        *,
        seed: int = 0,
        style: str | None = None,
        styles: Mapping[str, str] | None = None,
        default_style: str = "brief",
        max_tokens: int | None = None,
    ):
        self.judges = judges
        self.seed = seed
        self.style = style
        self.styles = dict(styles or {})
        self.default_style = default_style
        self.max_tokens = max_tokens
        self.rouge = Rouge()

    def style_for(self, item: SummaryItem) -> str:
        return self.style or self.styles.get(item.source) or self.default_style

    async def generate(self, sampler: Sampler, item: SummaryItem) -> dict[str, SummaryOutput]:
        out = await sampler.summarize(item, style=self.style_for(item), max_tokens=self.max_tokens)
        return {"served": out}

    def exact_scores(self, item: SummaryItem, outputs: dict[str, SummaryOutput]) -> dict:
        out = outputs["served"]
        rouge = self.rouge.score(item.reference, out.summary if out.error is None else "")
        style = self.style_for(item)
        return {
            **rouge,
            "error": out.error is not None,
            **degenerate.of(out, out.summary, item.text, degenerate.summary_instruction(style)),
            "style": style,
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
            "scores": with_judge_scores(scores, verdicts),
            "judges": [asdict(v) for v in verdicts],
        }

    def summarize(self, rows: list[dict], models: list[str]) -> dict:
        per_model = {}
        for model, mine, s in rows_per_model(rows, models):
            per_model[model] = {
                "n": len(mine),
                **{t: bootstrap_mean([x[t] for x in s], seed=self.seed).as_dict() for t in ROUGE_TYPES},
                "degenerate": degenerate.summarize(s),
                "styles": dict(Counter(x.get("style", "?") for x in s)),
                "errors": sum(1 for x in s if x["error"]),
                "judge": judge_summary([x["judge"] for x in s], seed=self.seed),
                "latency": exact.latency_summary(
                    [r["output"]["seconds"] for r in mine], [r["output"]["completion_tokens"] for r in mine]
                ),
            }
        return {
            "eval": self.kind,
            "main_metric": self.main_metric,
            "sources": dict(Counter({r["item_id"]: r.get("source", "") for r in rows}.values())),
            "models": per_model,
            "comparisons": compare(
                rows,
                models,
                binary={"degenerate": "degenerate"},
                scores={"rougeL": "rougeL", "judge": "judge"},
                seed=self.seed,
            ),
        }
