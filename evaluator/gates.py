"""The per-mode table and the quality gates of a run, computed from the per-dataset summaries.

- :func:`mode_rows`: one row per dataset and model: the mode's main figure with its 95% interval, the
  degenerate rate, the paired test against the base model (the run's first model) and the command that
  reproduces the row. ``summary.json`` (``modes``), ``report.html`` and the README's figures table use it.
- :func:`evaluate`: every gate of issue 7 for every model, pass/fail computed from the figures (thresholds
  in :class:`~evaluator.config.GatesConfig`). A gate whose dataset was not run is ``not run``; one whose
  figure cannot be measured in this run (format compliance over ``--url``) ``not measured``; one measured on
  fewer items than its dataset holds ``incomplete`` (``passed`` still says what these items show).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from evaluator.config import GatesConfig
from evaluator.datasets import KINDS


def _comparison(ds: dict, base: str, model: str) -> dict | None:
    return next((c for c in ds.get("comparisons", []) if c["a"] == base and c["b"] == model), None)


def mode_rows(
    per_dataset: dict, models: list[str], command_for: Callable[[str, int], str | None] | None = None
) -> list[dict]:
    base = models[0] if models else None
    out = []
    for path, ds in per_dataset.items():
        metric = ds.get("main_metric")
        for model, m in ds["models"].items():
            iv = m.get(metric) if metric else None
            paired = None
            comp = _comparison(ds, base, model) if model != base else None
            test = comp.get(metric) if comp and metric else None
            if test:
                paired = {"vs": base, "test": test["test"], "n": test["n"], "p_value": test["p_value"]}
            out.append(
                {
                    "mode": ds["kind"],
                    "dataset": path,
                    "model": model,
                    "n": m["n"],
                    "metric": metric,
                    "value": {k: iv.get(k) for k in ("estimate", "low", "high", "n")} if iv else None,
                    "degenerate": m.get("degenerate"),
                    "paired": paired,
                    "command": command_for(path, m["n"]) if command_for else None,
                }
            )
    return out


def _find(per_dataset: dict, kind: str, stem_prefix: str) -> str | None:
    return next(
        (p for p, ds in per_dataset.items() if ds["kind"] == kind and Path(p).stem.startswith(stem_prefix)),
        None,
    )


def _gate(
    gate_id: str,
    mode: str,
    model: str,
    rule: str,
    *,
    dataset: str | None,
    value: float | None = None,
    threshold: float | None = None,
    passed: bool | None = None,
    n: int | None = None,
    required_n: int | None = None,
    ran: bool = True,
    **extra,
) -> dict:
    if not ran:
        status = "not run"
    elif passed is None:
        status = "not measured"
    elif required_n is not None and (n or 0) < required_n:
        status = "incomplete"
    else:
        status = "pass" if passed else "fail"
    return {
        "id": gate_id,
        "mode": mode,
        "model": model,
        "dataset": dataset,
        "rule": rule,
        "value": value,
        "threshold": threshold,
        "n": n,
        "required_n": required_n,
        "passed": passed,
        "status": status,
        **extra,
    }


def _cmp(value: float | None, ok: Callable[[float], bool]) -> bool | None:
    return None if value is None else bool(ok(value))


def _degenerate_gates(per_dataset: dict, model: str, g: GatesConfig) -> list[dict]:
    out = []
    for mode in KINDS:
        dsets = [
            ds["models"][model] for ds in per_dataset.values() if ds["kind"] == mode and model in ds["models"]
        ]
        count = sum(m["degenerate"]["count"] for m in dsets if m.get("degenerate"))
        n = sum(m["degenerate"]["n"] for m in dsets if m.get("degenerate"))
        rate = count / n if n else None
        out.append(
            _gate(
                f"{mode}.degenerate",
                mode,
                model,
                f"degenerate outputs (empty, loop, echo) <= {g.degenerate_max:.0%}, "
                "pooled over the mode's sets",
                dataset=", ".join(p for p, ds in per_dataset.items() if ds["kind"] == mode) or None,
                value=rate,
                threshold=g.degenerate_max,
                passed=_cmp(rate, lambda r: r <= g.degenerate_max),
                n=n,
                ran=bool(dsets),
                count=count,
            )
        )
    return out


def _mcq_gates(per_dataset: dict, model: str, g: GatesConfig) -> list[dict]:
    path = _find(per_dataset, "mcq", g.mcq_dataset)
    m = per_dataset[path]["models"].get(model) if path else None
    common = dict(dataset=path, required_n=g.mcq_required_n, ran=m is not None, n=m["n"] if m else None)
    acc = m["accuracy"]["estimate"] if m else None
    share = m.get("max_letter_share", {}).get("estimate") if m else None
    fmt = m["format_compliance"]["estimate"] if m else None
    return [
        _gate(
            "mcq.accuracy",
            "mcq",
            model,
            f"accuracy >= {g.mcq_accuracy_min:.0%} on all {g.mcq_required_n} questions",
            value=acc,
            threshold=g.mcq_accuracy_min,
            passed=_cmp(acc, lambda v: v >= g.mcq_accuracy_min),
            **common,
        ),
        _gate(
            "mcq.max_letter_share",
            "mcq",
            model,
            f"no answer letter chosen for more than {g.mcq_max_letter_share:.0%} of the questions",
            value=share,
            threshold=g.mcq_max_letter_share,
            passed=_cmp(share, lambda v: v <= g.mcq_max_letter_share),
            letter=m.get("max_letter_share", {}).get("letter") if m else None,
            **common,
        ),
        _gate(
            "mcq.format_compliance",
            "mcq",
            model,
            f"format compliance of the unconstrained model >= {g.mcq_format_compliance_min:.0%}",
            value=fmt,
            threshold=g.mcq_format_compliance_min,
            passed=_cmp(fmt, lambda v: v >= g.mcq_format_compliance_min),
            **common,
        ),
    ]


def _summary_gates(per_dataset: dict, model: str, base: str, g: GatesConfig) -> list[dict]:
    path = _find(per_dataset, "summary", g.summary_dataset)
    m = per_dataset[path]["models"].get(model) if path else None
    common = dict(dataset=path, required_n=g.summary_required_n, n=m["n"] if m else None)
    rouge = m["rougeL"]["estimate"] if m else None
    gates = [
        _gate(
            "summary.rougeL",
            "summary",
            model,
            f"ROUGE-L >= {g.summary_rouge_l_min} on MTS-Dialog validation",
            value=rouge,
            threshold=g.summary_rouge_l_min,
            passed=_cmp(rouge, lambda v: v >= g.summary_rouge_l_min),
            ran=m is not None,
            **common,
        )
    ]
    if model != base:
        comp = _comparison(per_dataset[path], base, model) if path else None
        test = comp.get("rougeL") if comp else None
        passed = None
        if test and test["mean_diff"] is not None:
            passed = test["mean_diff"] > 0 and test["p_value"] < g.alpha
        gates.append(
            _gate(
                "summary.rougeL_above_base",
                "summary",
                model,
                f"ROUGE-L above the base model ({base}), Wilcoxon signed-rank p < {g.alpha}",
                value=test["mean_diff"] if test else None,
                threshold=0.0,
                passed=passed,
                ran=m is not None,
                p_value=test["p_value"] if test else None,
                **common,
            )
        )
    return gates


def _note_qa_gates(per_dataset: dict, model: str, g: GatesConfig) -> list[dict]:
    path = _find(per_dataset, "note_qa", g.note_qa_dataset)
    m = per_dataset[path]["models"].get(model) if path else None
    common = dict(dataset=path, required_n=g.note_qa_required_n, ran=m is not None, n=m["n"] if m else None)
    stated = m.get("decision_stated", {}).get("estimate") if m else None
    acc = m.get("decision_accuracy", {}).get("estimate") if m else None
    majority = m.get("majority_class", {}).get("rate") if m else None
    return [
        _gate(
            "note_qa.decision_stated",
            "note_qa",
            model,
            f"PubMedQA decision (yes/no/maybe) stated in >= {g.decision_stated_min:.0%} of answers",
            value=stated,
            threshold=g.decision_stated_min,
            passed=_cmp(stated, lambda v: v >= g.decision_stated_min),
            **common,
        ),
        _gate(
            "note_qa.decision_accuracy",
            "note_qa",
            model,
            "PubMedQA decision accuracy above the majority-class rate of the same items",
            value=acc,
            threshold=majority,
            passed=None if acc is None or majority is None else acc > majority,
            p_value=m.get("accuracy_above_majority_p") if m else None,
            **common,
        ),
    ]


def evaluate(per_dataset: dict, models: list[str], g: GatesConfig | None = None) -> dict:
    """Every gate for every model, and each model's overall status: ``fail`` if any gate fails, else
    ``incomplete`` while any is not run, not measured or incomplete, else ``pass``."""
    g = g or GatesConfig()
    if not models:
        return {"base": None, "thresholds": g.model_dump(), "results": [], "models": {}}
    base = models[0]
    results = []
    for model in models:
        results += _degenerate_gates(per_dataset, model, g)
        results += _mcq_gates(per_dataset, model, g)
        results += _summary_gates(per_dataset, model, base, g)
        results += _note_qa_gates(per_dataset, model, g)
    overall = {}
    for model in models:
        statuses = [r["status"] for r in results if r["model"] == model]
        if "fail" in statuses:
            overall[model] = "fail"
        elif any(s != "pass" for s in statuses):
            overall[model] = "incomplete"
        else:
            overall[model] = "pass"
    return {"base": base, "thresholds": g.model_dump(), "results": results, "models": overall}
