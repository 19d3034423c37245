"""``python -m finetune --config config/finetune.yaml [prepare|train|export|register|all ...]``

Stages run in order and each can run alone (they communicate through files in ``<output_dir>/<name>/``):
prepare → ``data/{train,val}.jsonl`` + ``manifest.json``; train → ``adapter/`` (resumes from ``checkpoints/``);
export → ``models/adapters/<name>-lora.gguf``, ``models/<name>-<quant>.gguf`` and Modelfiles; register → ``ollama
create`` when a server answers. ``--set key.sub=value`` overrides any config value (YAML syntax).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from finetune.config import load_config
from medgpt.settings import project_root

STAGES = ("prepare", "train", "export", "register")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("stages", nargs="*", default=["all"], choices=[*STAGES, "all"], metavar="STAGE",
                   help=f"stages to run, in order: {', '.join(STAGES)} or all (default)")  # fmt: skip
    p.add_argument("--config", type=Path, default=None, help="YAML config (default: built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.max_steps=20 (repeatable)")  # fmt: skip
    p.add_argument("--root", type=Path, default=None,
                   help="where relative paths start (default: MEDGPT_HOME, else the checkout)")  # fmt: skip
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log = logging.getLogger("finetune")
    root = (args.root or project_root()).resolve()
    cfg = load_config(args.config, args.overrides).resolved(root)
    # Thread limits must be set before torch (and OpenMP) start: the machines are shared.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(cfg.train.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from finetune.pipeline import run_stage
    from finetune.run_record import write_resolved_config

    stages = list(STAGES) if "all" in args.stages else [s for s in STAGES if s in args.stages]
    run_dir = cfg.run_dir
    write_resolved_config(cfg, run_dir)
    log.info("run directory: %s", run_dir)
    for stage in stages:
        log.info("stage %s", stage)
        result = run_stage(stage, cfg, root)
        print(json.dumps({stage: _summary(result)}, default=str), flush=True)
    return 0


def _summary(result: dict) -> dict:
    """What the terminal shows of a stage's result (the loss curve stays in the files)."""
    return {
        k: v for k, v in result.items() if k not in {"loss_curve", "contaminated_exact", "contaminated_near"}
    }


if __name__ == "__main__":
    sys.exit(main())
