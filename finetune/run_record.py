"""The record every run leaves next to its outputs: resolved config, seed, data hashes, versions and each stage's
metrics, so a shipped model can be traced back to exactly what produced it.

``run.json`` is updated after each stage (read, merge, write atomically), so stages run alone still add to one
record.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from finetune.config import FinetuneConfig

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "datasets",
    "accelerate",
    "gguf",
    "llama_cpp_python",
    "unsloth",
)


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _git_commit(root: Path) -> str | None:
    """The checked-out commit, asked of git itself (``.git/HEAD`` read by hand misses packed refs and worktrees)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write_resolved_config(cfg: FinetuneConfig, run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.resolved.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False))
    return path


def record_stage(cfg: FinetuneConfig, run_dir: Path, stage: str, result: dict[str, Any], root: Path) -> Path:
    """Merge ``result`` as ``stages[stage]`` into ``run_dir/run.json``."""
    path = run_dir / "run.json"
    record: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    record.update(
        {
            "name": cfg.name,
            "seed": cfg.seed,
            "config": json.loads(cfg.model_dump_json()),
            "git_commit": _git_commit(root),
            "python": platform.python_version(),
            "machine": f"{platform.machine()} / {os.cpu_count()} CPUs",
            "packages": package_versions(),
        }
    )
    record.setdefault("stages", {})[stage] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **result}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(path)
    return path
