"""Paired comparisons of the models of one run on the items they all answered, from the result rows.

Every pair of models is compared (the first model of a run is the base, so "base vs each other model" is
among them, as ``a``). Yes/no outcomes (correct, decision correct, degenerate, format compliant) get McNemar's
exact test; per-item scores (ROUGE-L, judge) the Wilcoxon signed-rank test with the mean difference b - a.
An item with an unknown value (None) for either model is left out of that test only.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations

from evaluator.stats import mcnemar, wilcoxon_paired


def _paired(by: dict, a: str, b: str, common: list[str], key: str) -> tuple[list, list]:
    keep = [i for i in common if by[(a, i)].get(key) is not None and by[(b, i)].get(key) is not None]
    return [by[(a, i)][key] for i in keep], [by[(b, i)][key] for i in keep]


def compare(
    rows: list[dict],
    models: list[str],
    *,
    binary: Mapping[str, str] | None = None,
    scores: Mapping[str, str] | None = None,
    seed: int = 0,
) -> list[dict]:
    """One entry per pair ``{a, b, n, <name>: test}``; ``binary`` and ``scores`` map a report name to the
    row's score key (e.g. ``{"accuracy": "correct"}``). Each test says which it is (``test``)."""
    by = {(r["model"], r["item_id"]): r["scores"] for r in rows}
    out = []
    for a, b in combinations(models, 2):
        common = sorted({i for m, i in by if m == a} & {i for m, i in by if m == b})
        if not common:
            continue
        entry: dict = {"a": a, "b": b, "n": len(common)}
        for name, key in (binary or {}).items():
            xa, xb = _paired(by, a, b, common, key)
            if xa:
                test = mcnemar([bool(x) for x in xa], [bool(x) for x in xb])
                entry[name] = {"test": "mcnemar", **test.as_dict()}
        for name, key in (scores or {}).items():
            xa, xb = _paired(by, a, b, common, key)
            if xa:
                entry[name] = {"test": "wilcoxon", **wilcoxon_paired(xa, xb, seed=seed).as_dict()}
        out.append(entry)
    return out
