"""``python evaluator.py`` / ``./medgpt.sh eval``: run the default evaluation of ``config/evaluator.yaml``,
or what the flags say instead."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

from evaluator.config import DEFAULT_CONFIG, JudgeConfig, load_config
from evaluator.datasets import KINDS, kind_of_file

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluator.py",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="evaluator config (default: %(default)s)"
    )
    p.add_argument(
        "--models",
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
    p.add_argument(
        "--limit",
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
    p.add_argument("--seed", type=int, help="sampling / judge / bootstrap seed")
    p.add_argument(
        "--url", help="evaluate a running gateway (http://host:port) instead of in-process engines"
    )
    p.add_argument(
        "--engine", choices=["llamacpp", "ollama", "openai"], help="core engine (default: medgpt.yaml)"
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        help="max tokens of every answer in every mode, over the per-mode and per-dataset values",
    )
    p.add_argument(
        "--no-raw",
        action="store_true",
        help="MCQ: skip the unconstrained pass (no format compliance; degenerate outputs counted on the "
        "served answer; ~2x faster)",
    )
    p.add_argument("--concurrency", type=int, help="model calls in flight at once")
    p.add_argument("--threads", type=int, help="llama.cpp threads for in-process models")
    p.add_argument("--weave-project", help="log the run to W&B Weave (needs WANDB_API_KEY)")
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


def config_from_args(args: argparse.Namespace):
    cfg = load_config(args.config)
    update: dict = {}
    if args.models:
        update["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    dsets = [cfg.dataset(p) for p in args.dataset] if args.dataset else list(cfg.datasets)
    if args.mode:
        dsets = [ds for ds in dsets if kind_of_file(cfg.resolve(ds.path)) in args.mode]
        if not dsets:
            raise SystemExit(f"no dataset of mode {', '.join(args.mode)} to run")
    if args.limit is not None:
        update["limit"] = args.limit or None
        dsets = [ds.model_copy(update={"limit": args.limit}) for ds in dsets]
    if args.judge:
        judges = [JudgeConfig.parse(j) for j in args.judge if j != "none"]
        update["judges"] = judges
        update["judge_flags"] = [j for j in args.judge if j != "none"] or ["none"]
        if judges:
            dsets = [ds.model_copy(update={"judge": True}) for ds in dsets]
    update["datasets"] = dsets
    if args.seed is not None:
        update["seed"] = args.seed
    if args.url:
        update["url"] = args.url
    if args.engine:
        update["engine"] = args.engine
    if args.concurrency:
        update["concurrency"] = args.concurrency
    if args.threads:
        update["n_threads"] = args.threads
    if args.max_tokens:
        update["max_tokens"] = args.max_tokens
    cfg = cfg.model_copy(update=update)
    if args.no_raw:
        cfg.mcq = cfg.mcq.model_copy(update={"raw": False})
    if args.weave_project:
        cfg.weave = cfg.weave.model_copy(update={"project": args.weave_project})
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
