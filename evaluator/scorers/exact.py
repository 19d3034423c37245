"""Exact scorers: MCQ choice accuracy, format compliance, latency and tokens per second.

Accuracy is scored on what the gateway serves (constrained decoding plus the rescue step); format compliance
on the model as it is (``constrained=False``: no grammar, no rescue), because a grammar makes every output
well formed and would hide what fine-tuning taught. A failed call (``error``) counts as wrong and as not well
formed: leaving it out would flatter a model that crashes on hard items.
"""

from __future__ import annotations

from collections.abc import Sequence

from evaluator.stats import Interval, percentile, wilson_interval
from evaluator.types import MCQItem, MCQOutput
from medgpt.prompts import parse_mcq


def choice_correct(item: MCQItem, output: MCQOutput) -> bool:
    return output.error is None and output.choice == item.answer


def format_compliant(item: MCQItem, output: MCQOutput) -> bool | None:
    """Both tags present and the answer parses to an option: from the raw text where there is one (the core's
    ``well_formed`` is the same rule, ``medgpt.prompts.parse_mcq``); None when the source cannot tell."""
    if output.error is not None:
        return False
    if output.raw_text:
        return parse_mcq(output.raw_text, item.options).well_formed
    return output.well_formed


def tokens_per_second(completion_tokens: int, seconds: float) -> float | None:
    return completion_tokens / seconds if seconds > 0 and completion_tokens > 0 else None


def proportion(values: Sequence[bool | None]) -> Interval:
    """Wilson interval over the values that are not None."""
    known = [bool(v) for v in values if v is not None]
    return wilson_interval(sum(known), len(known))


def latency_summary(seconds: Sequence[float], completion_tokens: Sequence[int]) -> dict:
    """Mean/p50/p95 latency and aggregate decode throughput (total tokens / total seconds)."""
    secs = [float(s) for s in seconds]
    total_s = sum(secs)
    return {
        "n": len(secs),
        "mean_s": total_s / len(secs) if secs else None,
        "p50_s": percentile(secs, 50),
        "p95_s": percentile(secs, 95),
        "tokens_per_s": sum(completion_tokens) / total_s if total_s > 0 else None,
        "completion_tokens_mean": sum(completion_tokens) / len(completion_tokens)
        if completion_tokens
        else None,
    }
