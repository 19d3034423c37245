"""Benchmark (not a test): seconds per optimizer step and peak RSS of CPU LoRA training with the default config.

    python bench/finetune_step.py [--config config/finetune.yaml] [--steps 6] [--threads 1] [--set key=value ...]

Uses the real prepared data (prepare runs into a temporary folder), the real base model and the real trainer
(PEFT + TRL, completion-only loss). The first step is reported apart (warm-up: allocations, first backward).
Timings depend heavily on what else runs on the machine: note the load average printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "config" / "finetune.yaml")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the config's)")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()

    from finetune.config import load_config

    overrides = [
        *args.overrides,
        f"train.max_steps={args.steps}",
        "train.save_steps=100000",
        "train.logging_steps=1",
    ]
    if args.threads:
        overrides.append(f"train.threads={args.threads}")
    cfg = load_config(args.config, overrides).resolved(ROOT)
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.train.threads))

    from transformers import TrainerCallback, set_seed

    from finetune.base_model import base_template, ensure_base_gguf, ensure_hf_base
    from finetune.data import prepare
    from finetune.train import build_trainer, peak_rss_mb, select_backend

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.times.append(now - self.last)
            self.last = now

    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        run_dir = Path(tmp)
        template = base_template(ensure_base_gguf(cfg.base), cfg.data.prompt_format)  # the rows as served
        prepare(cfg.data, cfg.seed, run_dir / "data", template)
        hf_dir = ensure_hf_base(cfg.base)
        set_seed(cfg.seed)
        backend = select_backend(cfg.train.backend)
        trainer, _, facts = build_trainer(cfg, hf_dir, run_dir, backend)
        timer = StepTimer()
        trainer.add_callback(timer)
        rss_before = peak_rss_mb()
        timer.last = time.perf_counter()
        trainer.train()
    steady = timer.times[1:] or timer.times
    seqs = cfg.train.batch_size * cfg.train.grad_accum
    result = {
        "backend": backend,
        "threads": cfg.train.threads,
        "steps": len(timer.times),
        "sequences_per_step": seqs,
        "max_seq_len": cfg.train.max_seq_len,
        "tokens_mean_per_sequence": facts["tokens_mean"],
        "first_step_s": round(timer.times[0], 2),
        "seconds_per_step_median": round(statistics.median(steady), 2),
        "seconds_per_step_mean": round(statistics.fmean(steady), 2),
        "seconds_per_sequence": round(statistics.median(steady) / seqs, 2),
        "peak_rss_mb_after_load": round(rss_before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
