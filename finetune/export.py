"""``export``: the trained adapter → GGUF files llama.cpp and Ollama load, plus Modelfiles and a metrics record.

Two kinds of artifact, because of how a Gemma 3 270M tune survives conversion:
- **The adapter alone** (``models/adapters/<name>-lora.gguf``, ~7.6 MB at r=16), applied on top of the base
  Q4_K_M (llama.cpp ``lora_path``, Ollama ``ADAPTER``). It keeps the whole tune at the base's size. Trap:
  ``convert_lora_to_gguf.py`` ignores ``use_rslora`` and llama.cpp scales an adapter by alpha/r, whereas rsLoRA
  trained it at alpha/sqrt(r); the adapter is therefore written with ``lora_alpha = alpha * sqrt(r)`` so that it
  applies at the trained strength with scale 1.0 (4× too weak at r=16 otherwise).
- **Merged models** (``models/<name>-<quant>.gguf``): merge → HF folder (with the tokenizer files the converter
  needs: SentencePiece files for a SentencePiece vocabulary) → f16 GGUF, whose vocabulary is checked against the
  served GGUF's → llama.cpp quantizer. Re-quantizing a Gemma 3 270M merge to q4_k_m erases most of the tune (many
  tensors have 640 columns, not a multiple of 256, and fall back to coarser types, drowning the LoRA delta); q8_0
  keeps it.

Any base the train stage takes works here: ``convert_lora_to_gguf.py`` maps the adapter's tensors by the base
folder's ``config.json`` (the architecture), and the Modelfiles carry the model's own chat template (its Ollama
form, :mod:`medgpt.templates`) and stop strings.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from finetune.base_model import (
    base_template,
    check_same_vocabulary,
    copy_tokenizer_files,
    ensure_base_gguf,
    ensure_hf_base,
    template_record,
)
from finetune.config import FinetuneConfig
from finetune.llama_cpp_tools import convert_hf_to_gguf, convert_lora_to_gguf, ensure_converters, quantize
from finetune.modelfile import write_modelfile
from medgpt.templates import ChatTemplate

log = logging.getLogger(__name__)


def llama_cpp_alpha(alpha: float, r: int, rslora: bool) -> float:
    """The ``lora_alpha`` to store in the adapter GGUF so llama.cpp's alpha/r equals the trained scale."""
    return alpha * math.sqrt(r) if rslora else alpha


def adapter_for_llama_cpp(adapter_dir: Path, out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """A copy of the PEFT adapter whose config carries the llama.cpp-equivalent alpha (rsLoRA folded in)."""
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    r, alpha, rslora = int(cfg["r"]), float(cfg["lora_alpha"]), bool(cfg.get("use_rslora"))
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise ValueError("per-module rank/alpha patterns cannot be expressed in one llama.cpp adapter alpha")
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(adapter_dir / "adapter_model.safetensors", out_dir / "adapter_model.safetensors")
    cfg["lora_alpha"] = llama_cpp_alpha(alpha, r, rslora)
    cfg["use_rslora"] = False
    (out_dir / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return out_dir, {"r": r, "alpha": alpha, "rslora": rslora, "llama_cpp_alpha": cfg["lora_alpha"]}


def merge_adapter(hf_base: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Base + adapter merged into plain weights (exact: PEFT's merge), saved with the full tokenizer files."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(hf_base), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir))
    copy_tokenizer_files(hf_base, out_dir)
    return out_dir


def _size_mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 2)


def export(cfg: FinetuneConfig, run_dir: Path) -> dict[str, Any]:
    """Write the adapter GGUF and the merged quantizations with their Modelfiles; return what was written."""
    adapter_dir = run_dir / "adapter"
    if not (adapter_dir / "adapter_model.safetensors").exists():
        raise FileNotFoundError(f"{adapter_dir} has no trained adapter: run the train stage first")
    if cfg.export.llama_cpp_version is None:
        raise RuntimeError("export needs llama-cpp-python installed (pip install -e '.[finetune]')")
    base_gguf = ensure_base_gguf(cfg.base, cfg.export.tools_cache_dir)
    hf_base = ensure_hf_base(cfg.base, cfg.export.tools_cache_dir)
    template = base_template(base_gguf, cfg.data.prompt_format, cfg.name)
    tools = ensure_converters(cfg.export.llama_cpp_version, cfg.export.tools_cache_dir)
    work = run_dir / "export"
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "base_gguf": str(base_gguf),
        "template": template_record(template, cfg.data.prompt_format),
        "artifacts": {},
    }

    if cfg.export.adapter:
        fixed, scale_info = adapter_for_llama_cpp(adapter_dir, work / "adapter-llama.cpp")
        out = convert_lora_to_gguf(tools, fixed, hf_base, cfg.adapter_gguf, "f16")
        modelfile = _modelfile(cfg.models_dir / f"{cfg.name}.Modelfile", base_gguf, template, adapter=out)
        result["artifacts"]["adapter"] = {
            "gguf": str(out),
            "size_mb": _size_mb(out),
            **modelfile,
            **scale_info,
        }
        log.info("adapter GGUF: %s (%.1f MB)", out, out.stat().st_size / 2**20)

    if cfg.export.merged_quants:
        merged_dir = merge_adapter(hf_base, adapter_dir, work / "merged")
        f16 = convert_hf_to_gguf(tools, merged_dir, work / f"{cfg.name}-f16.gguf", "f16")
        check_same_vocabulary(f16, base_gguf)
        for quant in cfg.export.merged_quants:
            target = cfg.models_dir / f"{cfg.name}-{quant}.gguf"
            if quant == "f16":
                shutil.copy2(f16, target)
            else:
                quantize(f16, target, quant, threads=cfg.train.threads)
            modelfile = _modelfile(cfg.models_dir / f"{cfg.name}-{quant}.Modelfile", target, template)
            result["artifacts"][quant] = {"gguf": str(target), "size_mb": _size_mb(target), **modelfile}
            log.info("merged %s: %s (%.1f MB)", quant, target, target.stat().st_size / 2**20)
        if not cfg.export.keep_intermediate:
            shutil.rmtree(merged_dir, ignore_errors=True)
            f16.unlink(missing_ok=True)

    if cfg.export.check_prompts:
        check_artifacts(cfg, run_dir, base_gguf, result, template)
    if cfg.export.adapter:
        write_adapter_record(cfg, run_dir, result)
    return result


def _modelfile(path: Path, base: Path, template: ChatTemplate, adapter: Path | None = None) -> dict[str, Any]:
    """Write the Ollama Modelfile, or say why not: a GGUF template with no Ollama form (no named format renders it
    the same) has no Modelfile; the GGUF files are still written and llama.cpp serves them."""
    if template.ollama is None:
        reason = "the model's chat template has no Ollama form (no named format renders it the same)"
        log.warning("no Modelfile for %s: %s", base.name, reason)
        return {"modelfile": None, "modelfile_skipped": reason}
    return {"modelfile": str(write_modelfile(path, base, adapter=adapter, template=template))}


def check_artifacts(
    cfg: FinetuneConfig, run_dir: Path, base_gguf: Path, result: dict[str, Any], template: ChatTemplate
) -> None:
    """Format compliance of the base (the reference), the base + adapter and each merged quantization."""
    from finetune.check import format_compliance
    from finetune.data import read_jsonl

    rows = read_jsonl(run_dir / "data" / "val.jsonl")[: cfg.export.check_prompts]
    if not rows:
        return
    # The context holds the longest row trained on (validation rows are as long) and the answer.
    kw = {"threads": cfg.train.threads, "template": template, "n_ctx": cfg.train.max_seq_len + 192}
    checks = {"base": format_compliance(base_gguf, rows, **kw)}
    for kind, art in result["artifacts"].items():
        adapter = Path(art["gguf"]) if kind == "adapter" else None
        model = base_gguf if kind == "adapter" else Path(art["gguf"])
        checks[kind] = format_compliance(model, rows, adapter=adapter, **kw)
        log.info("format check %s: %s", kind, {k: v for k, v in checks[kind].items() if k != "samples"})
    result["format_check"] = checks


def write_adapter_record(cfg: FinetuneConfig, run_dir: Path, export_result: dict[str, Any]) -> Path:
    """``<adapter>.json`` next to the adapter GGUF: config, seed, data hashes and metrics of the run that made it,
    so the committed adapter documents itself."""

    def load(name: str) -> dict:
        path = run_dir / name
        return json.loads(path.read_text()) if path.exists() else {}

    train = load("train.json")
    manifest = load("data/manifest.json")
    record = {
        "name": cfg.name,
        "base_gguf": Path(export_result["base_gguf"]).name,
        "template": export_result.get("template"),
        "adapter": export_result["artifacts"].get("adapter"),
        "seed": cfg.seed,
        "config": json.loads(cfg.model_dump_json()),
        "data": {k: v for k, v in manifest.items() if not k.startswith("contaminated_")}
        | {
            "contaminated_exact": len(manifest.get("contaminated_exact", [])),
            "contaminated_near": len(manifest.get("contaminated_near", [])),
        },
        "train": train,
        "format_check": export_result.get("format_check"),
        "packages": load("run.json").get("packages", {}),
    }
    path = cfg.adapter_gguf.with_suffix(".json")
    path.write_text(json.dumps(_relative_paths(record, cfg), indent=2, default=str))
    return path


def _relative_paths(obj: Any, cfg: FinetuneConfig) -> Any:
    """Absolute project paths in the committed record are written relative to the project, and the home folder
    as ``~`` (no machine paths in a committed file)."""
    root = str(cfg.models_dir.parent) + "/"
    home = str(Path.home()) + "/"
    if isinstance(obj, dict):
        return {k: _relative_paths(v, cfg) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative_paths(v, cfg) for v in obj]
    if isinstance(obj, str) and obj.startswith(root):
        return obj[len(root) :]
    if isinstance(obj, str) and obj.startswith(home):
        return "~/" + obj[len(home) :]
    return obj
