"""``python evaluator.py`` / ``./medgpt.sh eval``: run the default evaluation of ``config/evaluator.yaml``,
or what the flags say instead."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import get_args

from evaluator.config import EvalConfig, JudgeConfig, default_config
from evaluator.datasets import KINDS, kind_of_file
from medgpt.settings import EngineKind

DESCRIPTION = """\
Evaluate MedGPT models in every mode the gateway serves, base vs fine-tuned on the same items:
  mcq      MedQA USMLE dev: accuracy, format compliance (unconstrained), choices per letter
  summary  MTS-Dialog / ACI-Bench validation: ROUGE-1/2/L against the references, judge
  note_qa  PubMedQA: decision accuracy vs the majority class, decision stated, ROUGE-L of the long
           answer; Asclepius-style note instructions: ROUGE-L
  open     MEDIQA questions: reference-free judge (when a judge is configured)
Every mode: degenerate outputs (empty, looping, echoing the prompt). 95% intervals (Wilson, bootstrap);
paired tests against the first model (McNemar exact, Wilcoxon signed-rank); the quality gates pass/fail.
Writes results.jsonl, summary.json, report.html and PNG plots into --out."""

EPILOG = """\
Defaults (models, datasets with their limits, answer lengths, judges, gates) come from
config/evaluator.yaml; flags override them. Examples:
  python evaluator.py                                     # the default run: every mode
  python evaluator.py --mode note_qa                      # the config's note-QA sets only
  python evaluator.py --dataset data/pubmedqa/pubmedqa_dev.jsonl --limit 100
  python evaluator.py --models gemma3-270m,medgpt --limit 5 --max-tokens 64 --judge none   # a smoke run
  python evaluator.py --combine runs/a/results.jsonl runs/b/results.jsonl --out results/eval/a-vs-b"""


#: Prefix of the argparse ``dest`` of a flag that sets one config key: the rest of the dest is the key.
_KEY = "config:"


def _override(p: argparse.ArgumentParser, flag: str, key: str, **kwargs) -> None:
    """A flag that sets the (dotted) config key ``key`` to its parsed value; when the flag is absent, the
    config's value stays."""
    if kwargs.get("action") is None and "choices" not in kwargs:
        kwargs.setdefault("metavar", flag.lstrip("-").replace("-", "_").upper())
    p.add_argument(flag, dest=_KEY + key, default=None, **kwargs)


def _names(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluator.py",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="evaluator config (default: config/evaluator.yaml)")
    _override(
        p,
        "--models",
        "models",
        type=_names,
        help="comma-separated model names from config/medgpt.yaml; the first is the base the others are "
        "compared with (default: config)",
    )
    p.add_argument(
        "--mode",
        action="append",
        choices=KINDS,
        help="run only the config's datasets of this mode (repeatable; with --dataset, filters those)",
    )
    p.add_argument(
        "--dataset",
        action="append",
        type=Path,
        help="JSONL eval set instead of the config's; the mode is told from the fields: question+options "
        "(mcq), note+question (note_qa), text+reference (summary), question alone (open). A set the config "
        "lists keeps its style, answer length and judge settings. Repeatable",
    )
    _override(
        p,
        "--limit",
        "limit",
        type=int,
        help="first N items of every dataset, over the per-dataset limits (0 = all)",
    )
    p.add_argument(
        "--judge",
        action="append",
        help="judge as kind:model[@base_url] (llamacpp:gemma3-270m, groq:llama-3.3-70b-versatile, "
        "groq:m@http://127.0.0.1:8081, ollama:llama3.1:8b@http://127.0.0.1:11434); repeatable, averaged; "
        "judges every dataset, including those the config leaves unjudged; 'none' for no judge",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="write the results into exactly this folder (default: a timestamped "
        "folder under the config's out)",
    )
    _override(p, "--seed", "seed", type=int, help="sampling / judge / bootstrap seed")
    _override(
        p, "--url", "url", help="evaluate a running gateway (http://host:port) instead of in-process engines"
    )
    _override(
        p, "--engine", "engine", choices=get_args(EngineKind), help="core engine (default: medgpt.yaml)"
    )
    _override(
        p,
        "--max-tokens",
        "max_tokens",
        type=int,
        help="max tokens of every answer in every mode, over the per-mode and per-dataset values",
    )
    _override(
        p,
        "--no-raw",
        "mcq.raw",
        action="store_false",
        help="MCQ: skip the unconstrained pass (no format compliance; degenerate outputs counted on the "
        "served answer; ~2x faster)",
    )
    _override(p, "--concurrency", "concurrency", type=int, help="model calls in flight at once")
    _override(p, "--threads", "n_threads", type=int, help="llama.cpp threads for in-process models")
    _override(p, "--weave-project", "weave.project", help="log the run to W&B Weave (needs WANDB_API_KEY)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--combine",
        nargs="+",
        type=Path,
        metavar="RESULTS_JSONL",
        help="no model calls: re-report the rows of earlier runs together (e.g. base and fine-tuned run "
        "separately on the same items), paired tests and gates included",
    )
    return p


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """The config file under the environment under the flags: each flag made by :func:`_override` sets its
    key; ``--judge`` replaces the judges; ``--dataset``/``--mode``/``--limit`` pick and limit the datasets."""
    overrides = {k[len(_KEY) :]: v for k, v in vars(args).items() if k.startswith(_KEY) and v is not None}
    judges = [j for j in args.judge or [] if j != "none"]
    if args.judge:
        overrides["judges"] = [JudgeConfig.parse(j) for j in judges]
        overrides["judge_flags"] = judges or ["none"]
    path = args.config or default_config()
    cfg = EvalConfig.load(path if args.config or path.exists() else None, overrides)
    dsets = [cfg.dataset(p) for p in args.dataset] if args.dataset else list(cfg.datasets)
    if args.mode:
        dsets = [ds for ds in dsets if kind_of_file(cfg.resolve(ds.path)) in args.mode]
        if not dsets:
            raise SystemExit(f"no dataset of mode {', '.join(args.mode)} to run")
    update: dict = {}
    if "limit" in overrides:
        update["limit"] = overrides["limit"]
    if judges:
        update["judge"] = True
    cfg.datasets = [ds.model_copy(update=update) for ds in dsets]
    return cfg


def out_dir_for(cfg, explicit: Path | None) -> Path:
    if explicit:
        return explicit
    return cfg.resolve(cfg.out) / time.strftime("%Y%m%d-%H%M%S")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from evaluator import report
    from evaluator.runner import run

    console = Console(stderr=True)
    cfg = config_from_args(args)
    out = out_dir_for(cfg, args.out)
    if args.combine:
        from evaluator.runner import combine

        rows, summary = combine(args.combine, cfg.seed, cfg)
        written = report.write_all(out, rows, summary)
        report.print_table(summary, None)
        console.print(f"report: {written['report']}")
        return 0
    console.print(f"MedGPT eval → {out}")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=args.quiet,
    ) as bar:

        def progress(label: str, total: int):
            task = bar.add_task(label, total=total)
            return lambda: bar.advance(task)

        result = asyncio.run(run(cfg, out, progress=progress))
    if not result.rows:
        console.print("[red]nothing was evaluated[/red]: " + "; ".join(result.notes or ["no models"]))
        return 1
    written = report.write_all(out, result.rows, result.summary)
    report.print_table(result.summary, None)
    console.print(f"report: {written['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
