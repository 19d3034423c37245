"""LLM-as-judge, reference-guided: each configured judge grades an output against the ground truth (0 when
a tag of the answer format is missing, 1-5 for the chosen option and the reasoning against the ground truth),
and the item's judge score is the mean of the judges that returned a score.

A judge that could not be parsed or failed contributes None, and an item no judge scored is unscored (None):
the report counts those instead of filling in a number. The judge grades the MCQ answer as served
(:meth:`MCQOutput.served_text`); one missing a tag of the format is 0 by the rubric and is not sent to any
judge (saves a call, and a judge cannot get it wrong).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from evaluator.judges.base import Judge
from evaluator.judges.rubrics import mcq_judge_messages, open_judge_messages, summary_judge_messages
from evaluator.stats import Interval, bootstrap_mean
from evaluator.types import MCQItem, MCQOutput, OpenItem, SummaryItem, SummaryOutput, TextOutput, Verdict
from medgpt.prompts import mcq_target

RULE_JUDGE = "rubric"

#: The tags of the MCQ answer format, in order, read off the core's own target: the rule follows the format.
FORMAT_TAGS = tuple(re.findall(r"<(\w+)>", mcq_target("", "A", {"A": ""})))


def missing_tag(raw_text: str) -> str | None:
    for tag in FORMAT_TAGS:
        if f"<{tag}>" not in raw_text or f"</{tag}>" not in raw_text:
            return tag
    return None


def mean_score(verdicts: Sequence[Verdict]) -> float | None:
    scores = [v.score for v in verdicts if v.score is not None]
    return sum(scores) / len(scores) if scores else None


def with_judge_scores(scores: dict, verdicts: Sequence[Verdict]) -> dict:
    """A row's scores plus the judges' mean and each judge's own score, keyed the way every judged eval's
    summary and report read them (``judge``, ``judge.<name>``)."""
    return {**scores, "judge": mean_score(verdicts), **{f"judge.{v.judge}": v.score for v in verdicts}}


class JudgeScorer:
    def __init__(self, judges: Sequence[Judge]):
        self.judges = list(judges)

    async def _all(self, messages) -> list[Verdict]:
        return list(await asyncio.gather(*(j.grade(messages) for j in self.judges)))

    async def score_mcq(self, item: MCQItem, output: MCQOutput) -> list[Verdict]:
        if not self.judges:
            return []
        if output.error is not None:
            return [Verdict(RULE_JUDGE, None, "not graded: the model call failed", error=output.error)]
        candidate = output.served_text(item.options)
        tag = missing_tag(candidate)
        if tag:
            return [Verdict(RULE_JUDGE, 0.0, f"the <{tag}> tag is missing (rubric: 0; not sent to a judge)")]
        return await self._all(mcq_judge_messages(item.question, item.options, item.answer_text, candidate))

    async def score_summary(self, item: SummaryItem, output: SummaryOutput) -> list[Verdict]:
        if not self.judges:
            return []
        if output.error is not None:
            return [Verdict(RULE_JUDGE, None, "not graded: the model call failed", error=output.error)]
        if not output.summary.strip():
            return [Verdict(RULE_JUDGE, 0.0, "empty summary (rubric: 0; not sent to a judge)")]
        return await self._all(summary_judge_messages(item.text, item.reference, output.summary))

    async def score_open(self, item: OpenItem, output: TextOutput) -> list[Verdict]:
        """Reference-free: the question and the answer only (MEDIQA questions have no reference)."""
        if not self.judges:
            return []
        if output.error is not None:
            return [Verdict(RULE_JUDGE, None, "not graded: the model call failed", error=output.error)]
        if not output.text.strip():
            return [Verdict(RULE_JUDGE, 0.0, "empty answer (rubric: 0; not sent to a judge)")]
        return await self._all(open_judge_messages(item.question, output.text))

    async def aclose(self) -> None:
        for judge in self.judges:
            await judge.aclose()


def judge_summary(scores: Sequence[float | None], seed: int = 0) -> dict:
    """Mean judge score with a bootstrap 95% interval over the scored items, plus how many were unscored."""
    scored = [s for s in scores if s is not None]
    interval: Interval = bootstrap_mean(scored, seed=seed)
    hist = {str(k): sum(1 for s in scored if round(s) == k) for k in range(0, 6)}
    return {**interval.as_dict(), "unscored": len(scores) - len(scored), "histogram": hist}
