"""The results folder: ``results.jsonl``, ``summary.json``, ``report.html`` (jinja2) and PNG plots (matplotlib
Agg), plus the short table printed in the terminal (rich).

The HTML puts the models side by side per question, with each judge's explanation, because a figure is only
believable when the answers behind it can be read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jinja2 import Environment, FileSystemLoader

TEMPLATES = Path(__file__).resolve().parent / "templates"

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def _fmt_pct(iv: dict | None) -> str:
    if not iv or iv.get("estimate") is None:
        return "n/a"
    return f"{100 * iv['estimate']:.1f}% [{100 * iv['low']:.1f}, {100 * iv['high']:.1f}]"


def _fmt_mean(iv: dict | None, digits: int = 2) -> str:
    if not iv or iv.get("estimate") is None:
        return "n/a"
    return f"{iv['estimate']:.{digits}f} [{iv['low']:.{digits}f}, {iv['high']:.{digits}f}]"


def _fmt_num(value, digits: int = 2, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def _fmt_degenerate(d: dict | None) -> str:
    if not d or d.get("estimate") is None:
        return "n/a"
    kinds = ", ".join(f"{k} {v}" for k, v in d["counts"].items() if v)
    return _fmt_pct(d) + (f" ({kinds})" if kinds else "")


def _fmt_metric(metric: str | None, iv: dict | None) -> str:
    """A main figure: rates as percentages, scores (ROUGE, judge) as numbers."""
    if metric in {"accuracy", "decision_accuracy"}:
        return _fmt_pct(iv)
    return _fmt_mean(iv, 2 if metric == "judge" else 3)


METRIC_LABELS = {
    "accuracy": "accuracy",
    "decision_accuracy": "decision accuracy",
    "rougeL": "ROUGE-L",
    "judge": "judge 0-5",
    None: "-",
}


def _cells(kind: str, m: dict, judged: bool) -> list[tuple[str, str]]:
    lat = m["latency"]
    tail = [
        ("degenerate (95% CI)", _fmt_degenerate(m.get("degenerate"))),
        ("latency p50", _fmt_num(lat["p50_s"], 1, " s")),
        ("tok/s", _fmt_num(lat["tokens_per_s"], 1)),
    ]
    judge = [
        ("judge 0-5 (95% CI)", _fmt_mean(m.get("judge"))),
        ("unscored", str(m["judge"]["unscored"]) if judged and m.get("judge") else "-"),
    ]
    if kind == "mcq":
        share = m.get("max_letter_share") or {}
        top = f"{share['letter']} {_fmt_pct(share)}" if share.get("letter") else "n/a"
        return [
            ("n", str(m["n"])),
            ("accuracy (95% CI)", _fmt_pct(m["accuracy"])),
            ("format (95% CI)", _fmt_pct(m["format_compliance"])),
            ("top letter share", top),
            *judge,
            ("rescued", str(m["rescued"])),
            *tail,
        ]
    if kind == "summary":
        return [
            ("n", str(m["n"])),
            ("ROUGE-1", _fmt_mean(m["rouge1"], 3)),
            ("ROUGE-2", _fmt_mean(m["rouge2"], 3)),
            ("ROUGE-L", _fmt_mean(m["rougeL"], 3)),
            *judge,
            *tail,
        ]
    if kind == "note_qa":
        cells = [("n", str(m["n"]))]
        if "decision_accuracy" in m:
            majority = m["majority_class"]
            cells += [
                ("decision accuracy (95% CI)", _fmt_pct(m["decision_accuracy"])),
                ("majority class", f"{majority['decision']} {100 * majority['rate']:.1f}%"),
                ("decision stated (95% CI)", _fmt_pct(m["decision_stated"])),
            ]
        return [*cells, ("ROUGE-L", _fmt_mean(m["rougeL"], 3)), *tail]
    return [("n", str(m["n"])), *judge, *tail]


def table_rows(summary: dict) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(dataset, model, [(metric, value)]) for the terminal table and the HTML summary."""
    out = []
    for path, ds in summary["datasets"].items():
        judged = ds.get("judged", bool(summary["run"].get("judges")))
        for model, m in ds["models"].items():
            out.append((Path(path).stem, model, _cells(ds["kind"], m, judged)))
    return out


def mode_table(summary: dict) -> list[dict]:
    """The per-mode table (mode, dataset, model, n, main figure with CI, degenerate rate, paired p-value,
    command), formatted; from ``summary["modes"]``."""
    out = []
    for r in summary.get("modes", []):
        p = r.get("paired")
        paired = f"{p['test']} p={p['p_value']:.3g} vs {p['vs']}" if p and p["p_value"] is not None else "-"
        out.append(
            {
                "mode": r["mode"],
                "dataset": Path(r["dataset"]).stem,
                "model": r["model"],
                "n": r["n"],
                "metric": METRIC_LABELS.get(r["metric"], r["metric"]),
                "value": _fmt_metric(r["metric"], r["value"]) if r["value"] else "n/a",
                "degenerate": _fmt_degenerate(r.get("degenerate")),
                "paired": paired,
                "command": r.get("command") or "",
            }
        )
    return out


def gate_rows(summary: dict) -> list[dict]:
    """The gates, formatted: rule, model, value vs threshold, n, status."""
    out = []
    for g in summary.get("gates", {}).get("results", []):
        pct = g["id"] not in {"summary.rougeL", "summary.rougeL_above_base"}
        value = "n/a" if g["value"] is None else (f"{100 * g['value']:.1f}%" if pct else f"{g['value']:.3f}")
        if g.get("p_value") is not None:
            value += f" (p={g['p_value']:.3g})"
        threshold = "" if g["threshold"] is None else (
            f"{100 * g['threshold']:.1f}%" if pct else f"{g['threshold']:.3f}"
        )
        n = "" if g["n"] is None else str(g["n"]) + (f" of {g['required_n']}" if g.get("required_n") else "")
        out.append(
            {"id": g["id"], "model": g["model"], "rule": g["rule"], "value": value, "threshold": threshold,
             "n": n, "status": g["status"]}
        )
    return out


def _test_line(stem: str, metric: str, c: dict, t: dict) -> str:
    if t.get("test") == "wilcoxon":
        if t["mean_diff"] is None:
            return f"{stem} {metric}: {c['a']} vs {c['b']}: no paired items"
        p = "n/a" if t["p_value"] is None else f"{t['p_value']:.3g}"
        significant = t["p_value"] is not None and t["p_value"] < 0.05
        return (
            f"{stem} {metric}: {c['a']} vs {c['b']} on {t['n']} items - mean {t['mean_a']:.3f} vs "
            f"{t['mean_b']:.3f}, difference {t['mean_diff']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}]; "
            f"higher for {c['b']} on {t['b_higher']}, for {c['a']} on {t['a_higher']}; Wilcoxon signed-rank "
            f"p={p} ({'significant' if significant else 'not significant'} at 5%)"
        )
    verdict = "significant at 5%" if t["p_value"] < 0.05 else "not significant at 5%"
    what = "degenerate" if metric == "degenerate" else "right"
    return (
        f"{stem} {metric}: {c['a']} vs {c['b']} on {t['n']} items - "
        f"{t['a_only']} {what} only for {c['a']}, {t['b_only']} only for {c['b']}; "
        f"McNemar {t['method']} p={t['p_value']:.3g} ({verdict})"
    )


def comparison_lines(summary: dict) -> list[str]:
    lines = []
    for path, ds in summary["datasets"].items():
        for c in ds.get("comparisons", []):
            for metric, t in c.items():
                if isinstance(t, dict) and "p_value" in t:
                    lines.append(_test_line(Path(path).stem, metric, c, t))
    return lines


def print_table(summary: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 200)
    rows = table_rows(summary)
    by_dataset: dict[str, list] = {}
    for ds, model, cells in rows:
        by_dataset.setdefault(ds, []).append((model, cells))
    for ds, entries in by_dataset.items():
        table = Table(title=f"MedGPT eval - {ds}", title_justify="left")
        table.add_column("model", style="bold")
        for metric, _ in entries[0][1]:
            table.add_column(metric, justify="right")
        for model, cells in entries:
            table.add_row(model, *[v for _, v in cells])
        console.print(table)
    for line in comparison_lines(summary):
        console.print(line)
    gates = summary.get("gates") or {}
    for model, status in gates.get("models", {}).items():
        failed = [g["id"] for g in gates["results"] if g["model"] == model and g["status"] == "fail"]
        console.print(f"gates {model}: {status}" + (f" (failed: {', '.join(failed)})" if failed else ""))
    for note in summary.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {note}")


# --- plots
# -------------------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt



def _save(plt, fig, path: Path) -> None:
    """Every plot ends the same way: lay out, write the PNG, free the figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

def plot_accuracy(summary: dict, path: Path) -> bool:
    """Accuracy and format compliance per model and MCQ set, with Wilson 95% intervals as error bars."""
    bars = []
    for ds_path, ds in summary["datasets"].items():
        if ds["kind"] != "mcq":
            continue
        for model, m in ds["models"].items():
            for metric in ("accuracy", "format_compliance"):
                iv = m[metric]
                if iv["estimate"] is not None:
                    bars.append((f"{model}\n{Path(ds_path).stem}", metric, iv))
    if not bars:
        return False
    plt = _plt()
    groups = list(dict.fromkeys(b[0] for b in bars))
    metrics = ["accuracy", "format_compliance"]
    fig, ax = plt.subplots(figsize=(max(5, 2.2 * len(groups)), 4))
    width = 0.38
    for k, metric in enumerate(metrics):
        xs, ys, lo, hi = [], [], [], []
        for g, group in enumerate(groups):
            for b in bars:
                if b[0] == group and b[1] == metric:
                    iv = b[2]
                    xs.append(g + (k - 0.5) * width)
                    ys.append(iv["estimate"])
                    lo.append(iv["estimate"] - iv["low"])
                    hi.append(iv["high"] - iv["estimate"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=4, label=metric.replace("_", " "), color=PALETTE[k])
    ax.axhline(0.25, color="grey", linestyle=":", linewidth=1, label="chance (4 options)")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylim(0, 1)
    ax.set_ylabel("proportion (Wilson 95% CI)")
    ax.set_title("MCQ accuracy and format compliance")
    ax.legend(fontsize=8)
    _save(plt, fig, path)
    return True


def plot_judge(rows: list[dict], path: Path) -> bool:
    """Distribution of the (mean) judge score per model: bars for 0..5, unscored items counted apart."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    scores = {m: [r["scores"].get("judge") for r in rows if r["model"] == m] for m in models}
    if not any(s is not None for v in scores.values() for s in v):
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    width = 0.8 / max(1, len(models))
    for k, model in enumerate(models):
        vals = scores[model]
        counts = [sum(1 for s in vals if s is not None and round(s) == b) for b in range(6)]
        unscored = sum(1 for s in vals if s is None)
        ax.bar(
            [b + (k - (len(models) - 1) / 2) * width for b in range(6)],
            counts,
            width,
            label=f"{model} (unscored {unscored})",
            color=PALETTE[k % len(PALETTE)],
        )
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xticks(range(6))
    ax.set_xlabel("judge score (rounded mean over judges)")
    ax.set_ylabel("items")
    ax.set_title("Judge score distribution")
    ax.legend(fontsize=8)
    _save(plt, fig, path)
    return True


def plot_latency(rows: list[dict], path: Path) -> bool:
    models = list(dict.fromkeys(r["model"] for r in rows))
    data = [
        [r["output"]["seconds"] for r in rows if r["model"] == m and not r["output"].get("error")]
        for m in models
    ]
    if not any(data):
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 1.8 * len(models)), 3.6))
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(models) + 1), models)
    ax.set_ylabel("seconds per item (served answer)")
    ax.set_title("Latency")
    _save(plt, fig, path)
    return True


def plot_rouge(summary: dict, path: Path) -> bool:
    entries = [
        (f"{m}\n{Path(p).stem}", s)
        for p, ds in summary["datasets"].items()
        if ds["kind"] == "summary"
        for m, s in ds["models"].items()
    ]
    if not entries:
        return False
    plt = _plt()
    types = ["rouge1", "rouge2", "rougeL"]
    fig, ax = plt.subplots(figsize=(max(5, 2.2 * len(entries)), 3.8))
    width = 0.8 / len(types)
    for k, t in enumerate(types):
        xs = [g + (k - 1) * width for g in range(len(entries))]
        ys = [s[t]["estimate"] or 0 for _, s in entries]
        err = [
            [(s[t]["estimate"] or 0) - (s[t]["low"] or 0) for _, s in entries],
            [(s[t]["high"] or 0) - (s[t]["estimate"] or 0) for _, s in entries],
        ]
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=t, color=PALETTE[k])
    ax.set_xticks(range(len(entries)), [e[0] for e in entries])
    ax.set_ylabel("F1 (bootstrap 95% CI)")
    ax.set_title("Summaries: ROUGE against references")
    ax.legend(fontsize=8)
    _save(plt, fig, path)
    return True


# --- HTML
# --------------------------------------------------------------------------------------------------------


def _side_by_side(rows: list[dict]) -> list[dict]:
    """Group rows by (dataset, item) so the template shows every model's answer to one question together."""
    grouped: dict[tuple[str, str], dict] = {}
    for r in rows:
        key = (r.get("dataset", ""), r["item_id"])
        g = grouped.setdefault(
            key, {"dataset": Path(key[0]).stem, "item_id": r["item_id"], "first": r, "models": []}
        )
        g["models"].append(r)
    return list(grouped.values())


def write_html(path: Path, summary: dict, rows: list[dict], plots: list[str]) -> None:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True)
    html = env.get_template("report.html.j2").render(
        summary=summary,
        table=table_rows(summary),
        comparisons=comparison_lines(summary),
        modes=mode_table(summary),
        gates=gate_rows(summary),
        gate_status=(summary.get("gates") or {}).get("models", {}),
        plots=plots,
        items=_side_by_side(rows),
        run=summary["run"],
    )
    path.write_text(html, encoding="utf-8")


def write_all(out_dir: Path, rows: list[dict], summary: dict) -> dict[str, Path]:
    """Write every artefact of a run; returns what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    write_jsonl(out_dir / "results.jsonl", rows)
    written["results"] = out_dir / "results.jsonl"
    partial = out_dir / "results.partial.jsonl"
    if partial.exists():
        partial.unlink()
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    written["summary"] = out_dir / "summary.json"
    plots = []
    for name, fn, arg in (
        ("accuracy.png", plot_accuracy, summary),
        ("judge_scores.png", plot_judge, rows),
        ("latency.png", plot_latency, rows),
        ("rouge.png", plot_rouge, summary),
    ):
        if fn(arg, out_dir / name):
            plots.append(name)
            written[name] = out_dir / name
    write_html(out_dir / "report.html", summary, rows, plots)
    written["report"] = out_dir / "report.html"
    return written
