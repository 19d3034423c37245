"""Quality against training steps: adapters saved along a run → GGUF → the evaluator on small dev subsets.
Prints one row per step; asserts nothing.

A resumable CPU run keeps only its last checkpoints; copy the adapter of the ones to compare first, e.g. every
100th: ``cp checkpoint-400/adapter_{model.safetensors,config.json} ~/.cache/medgpt/curve/step-400/``. Each step
is converted as the export stage converts the final adapter (rsLoRA scale folded into the GGUF's alpha), served
as base GGUF + adapter by the in-process engine, and measured with ``python evaluator.py`` on the first items of
the dev sets the README's figures use (MTS-Dialog brief summaries, PubMedQA, MedQA MCQ without the unconstrained
pass). Small subsets: the curve shows the trend, the full sets give the figures.

    python bench/adapter_curve.py [--curve ~/.cache/medgpt/curve] [--steps 300,400] [--mts 40] [--pubmedqa 40]
                                  [--mcq 60] [--out results/curve]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finetune.base_model import ensure_base_gguf, ensure_hf_base
from finetune.config import load_config
from finetune.export import adapter_for_llama_cpp
from finetune.llama_cpp_tools import convert_lora_to_gguf, ensure_converters

SETS = {
    "mts": ("data/summarization/mts_dialog_valid.jsonl", 128),
    "pubmedqa": ("data/pubmedqa/pubmedqa_dev.jsonl", None),
    "mcq": ("data/mcq/medqa_us_dev.jsonl", 160),
}


def adapter_gguf(step_dir: Path, finetune_config: Path) -> Path:
    """The step's adapter as a llama.cpp GGUF (converted once)."""
    out = step_dir / "adapter.gguf"
    if out.exists():
        return out
    cfg = load_config(finetune_config).resolved(ROOT)
    tools = ensure_converters(cfg.export.llama_cpp_version, cfg.export.tools_cache_dir)
    fixed, _ = adapter_for_llama_cpp(step_dir, step_dir / "llama.cpp")
    return convert_lora_to_gguf(tools, fixed, ensure_hf_base(cfg.base), out, "f16")


def gateway_config(steps: dict[int, Path], base_gguf: Path, path: Path) -> Path:
    """A gateway config serving every step as ``step-N`` (base GGUF + that step's adapter)."""
    models = [
        {"name": f"step-{n}", "path": str(base_gguf), "adapter": str(gguf), "prompt_format": "gemma", "n_ctx": 4096}
        for n, gguf in steps.items()
    ]
    path.write_text(yaml.safe_dump({"engine": "llamacpp", "default_model": models[0]["name"], "models": models}))
    return path


def evaluate(model: str, name: str, limit: int, config: Path, out: Path) -> dict:
    dataset, max_tokens = SETS[name]
    target = out / f"{model}-{name}"
    if not (target / "summary.json").exists():
        cmd = [sys.executable, "evaluator.py", "--models", model, "--threads", "1", "--judge", "none",
               "--dataset", dataset, "--limit", str(limit), "--out", str(target), "--quiet"]  # fmt: skip
        if max_tokens:
            cmd += ["--max-tokens", str(max_tokens)]
        if name == "mcq":
            cmd.append("--no-raw")
        subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "MEDGPT_CONFIG": str(config)})
    summary = json.loads((target / "summary.json").read_text())
    return summary["datasets"][dataset]["models"][model]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--curve", type=Path, default=Path("~/.cache/medgpt/curve").expanduser())
    ap.add_argument("--steps", default="", help="comma-separated steps (default: every step-N folder)")
    ap.add_argument("--finetune-config", type=Path, default=ROOT / "config" / "finetune.yaml")
    ap.add_argument("--mts", type=int, default=40)
    ap.add_argument("--pubmedqa", type=int, default=40)
    ap.add_argument("--mcq", type=int, default=60)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "curve")
    args = ap.parse_args()
    wanted = {int(s) for s in args.steps.split(",") if s}
    dirs = sorted((int(d.name.removeprefix("step-")), d) for d in args.curve.glob("step-*") if d.is_dir())
    dirs = [(n, d) for n, d in dirs if not wanted or n in wanted]
    if not dirs:
        raise SystemExit(f"no step-N folders under {args.curve}")
    args.out.mkdir(parents=True, exist_ok=True)
    steps = {n: adapter_gguf(d, args.finetune_config) for n, d in dirs}
    base = ensure_base_gguf(load_config(args.finetune_config).resolved(ROOT).base)
    config = gateway_config(steps, base, args.out / "medgpt-curve.yaml")

    print(f"{'step':>5} | MTS-Dialog ROUGE-L (n={args.mts}) | PubMedQA decision acc (n={args.pubmedqa}) | "
          f"MCQ acc (n={args.mcq}) | most-chosen letter | degenerate mts/pubmedqa/mcq")
    for n in steps:
        model = f"step-{n}"
        mts = evaluate(model, "mts", args.mts, config, args.out)
        pub = evaluate(model, "pubmedqa", args.pubmedqa, config, args.out)
        mcq = evaluate(model, "mcq", args.mcq, config, args.out)
        letter = mcq["max_letter_share"]
        print(f"{n:>5} | {mts['rougeL']['estimate']:.3f} [{mts['rougeL']['low']:.3f}, {mts['rougeL']['high']:.3f}] "
              f"| {pub['decision_accuracy']['estimate']:.1%} (majority {pub['majority_class']}) "
              f"| {mcq['accuracy']['estimate']:.1%} | {letter['letter']} {letter['estimate']:.0%} "
              f"| {mts['degenerate']['count']}/{pub['degenerate']['count']}/{mcq['degenerate']['count']}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
