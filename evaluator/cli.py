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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluator.py",
        description="Evaluate MedGPT models: MCQ accuracy (Wilson 95% CI), format compliance, "
        "reference-guided LLM-judge scores, ROUGE for summaries, latency; base vs fine-tuned with "
        "McNemar's paired test. "
        "Writes results.jsonl, summary.json, report.html and PNG plots.",
        epilog="Defaults come from config/evaluator.yaml. Example: python evaluator.py --limit 20 "
        "--models gemma3-270m,medgpt --judge llamacpp:gemma3-270m",
    )
    p.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="evaluator config (default: %(default)s)"
    )
    p.add_argument("--models", help="comma-separated model names from config/medgpt.yaml (default: config)")
    p.add_argument(
        "--dataset",
        action="append",
        type=Path,
        help="JSONL eval set, MCQ (question/options/answer_idx) or summary (text/reference); repeatable",
    )
    p.add_argument("--limit", type=int, help="first N items of each dataset (0 = all)")
    p.add_argument(
        "--judge",
        action="append",
        help="judge as kind:model[@base_url] (llamacpp:gemma3-270m, groq:llama-3.3-70b-versatile, "
        "groq:m@http://127.0.0.1:8081, ollama:llama3.1:8b@http://127.0.0.1:11434); repeatable, averaged; "
        "'none' for no judge",
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
    p.add_argument("--max-tokens", type=int, help="max tokens of an MCQ answer")
    p.add_argument(
        "--no-raw", action="store_true", help="skip the unconstrained pass (no format compliance; ~2x faster)"
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
        "separately on the same items), McNemar included",
    )
    return p


def config_from_args(args: argparse.Namespace):
    cfg = load_config(args.config)
    update: dict = {}
    if args.models:
        update["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.dataset:
        update["datasets"] = args.dataset
    if args.limit is not None:
        update["limit"] = args.limit or None
    if args.judge:
        update["judges"] = (
            [] if args.judge == ["none"] else [JudgeConfig.parse(j) for j in args.judge if j != "none"]
        )
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
    cfg = cfg.model_copy(update=update)
    if args.max_tokens:
        cfg.mcq = cfg.mcq.model_copy(update={"max_tokens": args.max_tokens})
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

        rows, summary = combine(args.combine, cfg.seed)
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
