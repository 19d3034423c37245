"""The four stages as functions of the resolved config; each reads what the previous one wrote in the run folder
and records its result in ``run.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune.config import FinetuneConfig
from finetune.run_record import record_stage


def stage_prepare(cfg: FinetuneConfig, root: Path) -> dict[str, Any]:
    """The rows, rendered in the served GGUF's chat template (resolved once, as the gateway resolves it)."""
    import json

    from finetune.base_model import base_template, ensure_base_gguf, template_record
    from finetune.data import prepare

    gguf = ensure_base_gguf(cfg.base, cfg.export.tools_cache_dir)
    template = base_template(gguf, cfg.data.prompt_format, cfg.name)
    manifest = prepare(cfg.data, cfg.seed, cfg.run_dir / "data", template)
    manifest["template"] = template_record(template, cfg.data.prompt_format)
    manifest["base_gguf"] = gguf.name
    (cfg.run_dir / "data" / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def stage_train(cfg: FinetuneConfig, root: Path) -> dict[str, Any]:
    from finetune.base_model import ensure_hf_base
    from finetune.train import train

    if not (cfg.run_dir / "data" / "train.jsonl").exists():
        raise FileNotFoundError(
            f"{cfg.run_dir / 'data' / 'train.jsonl'} is missing: run the prepare stage first"
        )
    return train(cfg, cfg.run_dir, ensure_hf_base(cfg.base, cfg.export.tools_cache_dir))


def stage_export(cfg: FinetuneConfig, root: Path) -> dict[str, Any]:
    from finetune.export import export

    return export(cfg, cfg.run_dir)


def stage_register(cfg: FinetuneConfig, root: Path) -> dict[str, Any]:
    from finetune.register import register

    return register(cfg)


STAGE_FUNCTIONS = {
    "prepare": stage_prepare,
    "train": stage_train,
    "export": stage_export,
    "register": stage_register,
}


def run_stage(stage: str, cfg: FinetuneConfig, root: Path) -> dict[str, Any]:
    result = STAGE_FUNCTIONS[stage](cfg, root)
    record_stage(cfg, cfg.run_dir, stage, result, root)
    return result
