"""``train``: rsLoRA on the prepared rows, loss on the completion only, resumable from the last checkpoint.

Backends:
- ``unsloth`` — Unsloth ``FastLanguageModel`` with the base loaded in 4 bit, used automatically when a CUDA GPU is
  present and Unsloth is installed. (Unsloth refuses to import without an accelerator, so this path cannot be run
  on our CPU machines.)
- ``peft`` — PEFT + the transformers ``Trainer`` (fp32 on CPU, bf16 on a GPU without Unsloth).

Tokenization is ours, by llama.cpp: the prompt is tokenized exactly as the gateway tokenizes it
(:func:`medgpt.engines.gguf.tokenize_prompt` with the base GGUF's template), the completion is appended, and every
prompt position gets the label -100. Rows longer than ``max_seq_len`` are skipped, not
truncated (a cut completion would lose its end-of-turn token and teach the model not to stop). The token ids are
cached beside the data (``data/<split>.tokens.jsonl``), so a run folder carried to a GPU machine trains there
without llama-cpp-python.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import re
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from finetune.config import FinetuneConfig
from finetune.data import read_jsonl
from medgpt.templates import ChatTemplate

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
#: Part of the token cache's key: caches written by another tokenization are rebuilt.
TOKENIZER_ID = "llama.cpp tokenize_prompt + completion/stop v2"


def select_backend(requested: str) -> str:
    """``unsloth`` when asked for or when ``auto`` finds CUDA and Unsloth; ``peft`` otherwise."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("unsloth") is not None:
        return "unsloth"
    return "peft"


class RowTokenizer:
    """Token ids of training rows by llama.cpp itself (the base GGUF's vocabulary, loaded ``vocab_only``), the way
    the gateway tokenizes: the prompt by :func:`medgpt.engines.gguf.tokenize_prompt` (BOS where the vocabulary asks
    for one and the template did not write it; only the template's markers read as special tokens), so the ids
    trained on are exactly the ids the gateway sends. transformers' tokenizer converted from a GGUF is not used: for
    Gemma it adds a spurious token (``"▁▁"``, id 262144, outside the 262,144-row embedding) for double spaces.

    The completion (target + the template's end of turn) is plain text followed by the stop token, which the model
    learns to write as the one control token that ends its turn."""

    def __init__(self, gguf_path: Path, template: ChatTemplate):
        from medgpt.engines.gguf import load_vocab

        self.template = template
        self.vocab = load_vocab(gguf_path)

    def prompt(self, text: str) -> list[int]:
        from medgpt.engines.gguf import tokenize_prompt

        return tokenize_prompt(self.vocab, text, self.template)

    def completion(self, text: str) -> list[int]:
        stop = next((s for s in self.template.stop if s and text.endswith(s)), "")
        body = text[: len(text) - len(stop)]
        ids = self.vocab.tokenize(body.encode("utf-8"), add_bos=False, special=False) if body else []
        if stop:
            ids += self.vocab.tokenize(stop.encode("utf-8"), add_bos=False, special=True)
        return ids

    def close(self) -> None:
        self.vocab.close()


@contextmanager
def llama_cpp_encoder(gguf_path: Path, template: ChatTemplate) -> Iterator[RowTokenizer]:
    """A :class:`RowTokenizer` of the base GGUF, closed afterwards."""
    tok = RowTokenizer(gguf_path, template)
    try:
        yield tok
    finally:
        tok.close()


def tokenize_example(tok: RowTokenizer, prompt: str, completion: str) -> dict[str, list[int]]:
    """``input_ids`` = prompt ids (with BOS where the model takes one) + completion ids; ``labels`` = -100 on the
    prompt, the ids on the completion.

    The two parts are tokenized separately, as at inference: the gateway tokenizes the prompt and the model then
    writes the completion token by token (every template's prompt ends in an open assistant turn, ``"\n"`` in
    Gemma's and ChatML's, so nothing merges across the boundary)."""
    prompt_ids = tok.prompt(prompt)
    completion_ids = tok.completion(completion)
    return {
        "input_ids": prompt_ids + completion_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + completion_ids,
    }


def tokenize_rows(tok: RowTokenizer, rows: list[dict[str, Any]], max_seq_len: int) -> tuple[list[dict], int]:
    """Tokenized rows that fit ``max_seq_len``, and how many were skipped."""
    out, skipped = [], 0
    for row in rows:
        ex = tokenize_example(tok, row["prompt"], row["completion"])
        if len(ex["input_ids"]) > max_seq_len:
            skipped += 1
            continue
        out.append(ex)
    return out, skipped


def tokenized_splits(
    cfg: FinetuneConfig, data_dir: Path, splits: tuple[str, ...] = ("train", "val")
) -> dict[str, tuple[list[dict], int]]:
    """For each split, the rows of ``data_dir/<split>.jsonl`` that fit ``max_seq_len``, tokenized, and how many were
    skipped.

    The ids are cached in ``<split>.tokens.jsonl`` under a key of the split file's and the base GGUF's SHA-256,
    the ``prompt_format``, the tokenizer and ``max_seq_len``; a stale cache (new data, another base) is rebuilt,
    which needs llama-cpp-python (the template is resolved from the GGUF and its vocabulary loaded once for all
    stale splits, the GGUF hashed once for all). A fresh cache needs neither: a run folder carried to a GPU
    machine trains there without llama-cpp-python."""
    from medgpt.models import file_sha256

    gguf = cfg.base.gguf
    gguf_sha256 = file_sha256(gguf)
    out: dict[str, tuple[list[dict], int]] = {}
    stale = []
    for split in splits:
        source, cache = data_dir / f"{split}.jsonl", data_dir / f"{split}.tokens.jsonl"
        key = {"rows_sha256": file_sha256(source), "gguf_sha256": gguf_sha256, "max_seq_len": cfg.train.max_seq_len,
               "prompt_format": cfg.data.prompt_format, "tokenizer": TOKENIZER_ID}  # fmt: skip
        if cache.exists():
            with cache.open() as fh:
                header = json.loads(fh.readline())
                if header.get("key") == key:
                    out[split] = [_with_labels(json.loads(line)) for line in fh], header["skipped"]
                    continue
        stale.append((source, cache, key, split))
    if stale:
        from finetune.base_model import base_template

        template = base_template(gguf, cfg.data.prompt_format, cfg.name)
        with llama_cpp_encoder(gguf, template) as tok:
            for source, cache, key, split in stale:
                rows, skipped = tokenize_rows(tok, read_jsonl(source), cfg.train.max_seq_len)
                with cache.open("w") as fh:
                    fh.write(json.dumps({"key": key, "skipped": skipped}) + "\n")
                    for r in rows:
                        prompt_len = sum(1 for label in r["labels"] if label == IGNORE_INDEX)
                        fh.write(json.dumps({"input_ids": r["input_ids"], "prompt_len": prompt_len}) + "\n")
                out[split] = rows, skipped
    return out


def _with_labels(cached: dict) -> dict[str, list[int]]:
    """A cached row (ids and prompt length) back as ``input_ids`` + ``labels``."""
    ids, n = cached["input_ids"], cached["prompt_len"]
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * n + ids[n:]}


def pad_batch(pad_id: int) -> Callable[[list[dict]], dict]:
    """Right-pads ``input_ids`` with ``pad_id`` and ``labels`` with -100, and masks the padding."""
    import torch

    def collate(rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: Linear modules never adapted by default: output heads and the towers of multimodal models.
_NOT_DECODER = re.compile(
    r"(^|\.)(lm_head|embed_tokens|vision_tower|vision_model|audio_tower|multi_modal_projector)(\.|$)"
)
#: A module inside a repeated block: a numeric part in its name (``model.layers.3.self_attn.q_proj``).
_IN_BLOCK = re.compile(r"\.\d+\.")


def lora_targets(model, configured: list[str] | None = None) -> list[str]:
    """The module names the adapter goes on: ``configured`` (each must name a ``Linear`` of ``model``), else every
    ``Linear`` inside the model's repeated decoder blocks, by its last name part, in the model's order (Llama,
    Gemma, Mistral, Qwen: q/k/v/o/gate/up/down ``_proj``)."""
    import torch

    linear = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    leaves = list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in linear))
    if configured:
        missing = [t for t in configured if t not in leaves]
        if missing:
            raise ValueError(
                f"lora.targets {missing} name no Linear module of {type(model).__name__}; "
                f"its Linear modules: {leaves} (or set lora.targets: null to take its projections)"
            )
        return list(configured)
    in_blocks = [name for name in linear if _IN_BLOCK.search(name) and not _NOT_DECODER.search(name)]
    found = list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in in_blocks))
    if not found:
        raise ValueError(f"{type(model).__name__}: no Linear module inside numbered blocks; set lora.targets")
    return found


def lora_config(cfg: FinetuneConfig, targets: list[str] | None = None):
    from peft import LoraConfig

    targets = targets or cfg.lora.targets
    if not targets:
        raise ValueError("lora_config: resolve the targets from the model first (lora_targets)")
    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(targets),
        use_rslora=cfg.lora.rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_peft_backend(cfg: FinetuneConfig, hf_dir: Path):
    """fp32 base + LoRA (PEFT). Returns (model, tokenizer); the model is already wrapped.

    Attention is eager on CPU (what the CPU runs were measured with) and SDPA on a GPU: eager keeps every layer's
    full attention matrix for the backward pass, which for 16 rows of 4,096 tokens is over 70 GiB."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    tokenizer = _tokenizer_or_none(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(
        str(hf_dir),
        dtype=torch.float32,
        attn_implementation="sdpa" if torch.cuda.is_available() else "eager",
    )
    model.config.use_cache = False
    return get_peft_model(model, lora_config(cfg, lora_targets(model, cfg.lora.targets))), tokenizer


def _tokenizer_or_none(hf_dir: Path):
    """The folder's tokenizer, saved beside the adapter for convenience; training never uses it (llama.cpp
    tokenizes), so a folder without one still trains."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(hf_dir))
    except (OSError, ValueError, TypeError) as exc:
        log.warning("no usable tokenizer in %s (%s); training does not need one", hf_dir, exc)
        return None


def load_unsloth_backend(cfg: FinetuneConfig, hf_dir: Path):  # pragma: no cover - needs a CUDA GPU
    """4-bit base + LoRA through Unsloth (GPU only). Returns (model, tokenizer)."""
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(hf_dir), max_seq_length=cfg.train.max_seq_len, load_in_4bit=True, dtype=None
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=lora_targets(model, cfg.lora.targets),
        use_rslora=cfg.lora.rslora,
        bias="none",
        use_gradient_checkpointing="unsloth",
        random_state=cfg.seed,
    )
    return model, tokenizer


def _trainer_callbacks(metrics_path: Path):
    from transformers import TrainerCallback

    class JsonlLogger(TrainerCallback):
        """Appends every logged value (loss, lr, eval loss) to ``metrics.jsonl`` as it happens, so a long run can
        be watched (``tail -f``) and its loss curve survives a crash."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                rec = {"step": state.global_step, "time": round(time.time(), 1), **logs}
                with metrics_path.open("a") as fh:
                    fh.write(json.dumps(rec) + "\n")

    return [JsonlLogger()]


def completion_loss_trainer_class():
    """A ``Trainer`` whose loss projects only the completion positions onto the vocabulary.

    Gemma's vocabulary has 262,144 tokens: the LM head is over half the model's compute, and a plain causal-LM
    loss scores every position. Running the decoder, then the head on the labelled positions alone, roughly
    halves a CPU step on MCQ rows, whose prompts are as long as their completions. (The head is applied here, as
    the model's own forward applies it, because a boolean ``logits_to_keep`` is not understood by every
    transformers 5 release.) The loss is the mean cross-entropy over the micro-batch's completion tokens; the
    Trainer divides it by the accumulation steps.
    """
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    class CompletionLossTrainer(Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # Our loss is a per-micro-batch mean: the Trainer must divide it by the accumulation steps (it does
            # not when it believes the model normalises by ``num_items_in_batch``).
            self.model_accepts_loss_kwargs = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"]
            target = labels[:, 1:]
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = target != IGNORE_INDEX
            lm = model.get_base_model() if hasattr(model, "get_base_model") else model
            outputs = lm.get_decoder()(
                input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), use_cache=False
            )
            logits = lm.get_output_embeddings()(outputs.last_hidden_state[keep]).float()
            cap = getattr(lm.config, "final_logit_softcapping", None)
            if cap is not None:
                logits = torch.tanh(logits / cap) * cap
            loss = F.cross_entropy(logits, target[target != IGNORE_INDEX], reduction="mean")
            return (loss, outputs) if return_outputs else loss

    return CompletionLossTrainer


def last_checkpoint(checkpoints_dir: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not checkpoints_dir.is_dir():
        return None
    found = get_last_checkpoint(str(checkpoints_dir))
    return Path(found) if found else None


def _pad_id(tokenizer, model) -> int:
    """Any id in the vocabulary pads (padding is masked and never labelled): the tokenizer's pad, else the model's."""
    for owner in (tokenizer, getattr(model, "config", None)):
        for attr in ("pad_token_id", "eos_token_id"):
            value = getattr(owner, attr, None) if owner is not None else None
            if isinstance(value, list):
                value = value[0] if value else None
            if isinstance(value, int) and value >= 0:
                return value
    return 0


def build_trainer(cfg: FinetuneConfig, hf_dir: Path, run_dir: Path, backend: str):
    """The configured ``Trainer`` (model, tokenized data, schedule) and facts about the data."""
    import torch
    from transformers import TrainingArguments

    t = cfg.train
    torch.set_num_threads(t.threads)
    if backend == "unsloth":
        model, tokenizer = load_unsloth_backend(cfg, hf_dir)
    else:
        model, tokenizer = load_peft_backend(cfg, hf_dir)

    data_dir = run_dir / "data"
    tokenized = tokenized_splits(cfg, data_dir)
    (train_tok, train_skipped), (val_tok, val_skipped) = tokenized["train"], tokenized["val"]
    val_tok = val_tok[: t.max_eval_rows]
    vocab = model.get_input_embeddings().num_embeddings
    if any(i >= vocab for r in train_tok + val_tok for i in r["input_ids"]):
        raise ValueError(f"token ids beyond the model's {vocab}-row embedding: tokenizer and model disagree")
    if not train_tok:
        raise ValueError(f"train: no row fits max_seq_len={t.max_seq_len}")
    lengths = [len(r["input_ids"]) for r in train_tok]

    use_gpu = torch.cuda.is_available()
    # Warm-up as a whole number of steps: a float ``warmup_steps`` means a ratio only in transformers 5, and
    # ``warmup_ratio`` is deprecated there, so the ratio is turned into steps here for every supported version.
    total_steps = t.max_steps or math.ceil(len(train_tok) / (t.batch_size * t.grad_accum) * t.epochs)
    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        max_steps=t.max_steps if t.max_steps is not None else -1,
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=math.ceil(t.warmup_ratio * total_steps),
        weight_decay=t.weight_decay,
        logging_steps=t.logging_steps,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if (t.eval_steps and val_tok) else "no",
        eval_steps=t.eval_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=not use_gpu,
        bf16=use_gpu and torch.cuda.is_bf16_supported(),
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=False,
        save_only_model=False,
    )
    trainer = completion_loss_trainer_class()(
        model=model,
        args=args,
        data_collator=pad_batch(_pad_id(tokenizer, model)),
        train_dataset=train_tok,
        eval_dataset=val_tok or None,
        processing_class=tokenizer,
        callbacks=_trainer_callbacks(run_dir / "metrics.jsonl"),
    )
    facts = {
        "train_rows": len(train_tok),
        "train_rows_skipped_too_long": train_skipped,
        "val_rows": len(val_tok),
        "val_rows_skipped_too_long": val_skipped,
        "tokens_mean": round(sum(lengths) / len(lengths), 1),
        "tokens_max": max(lengths),
        "tokens_total": sum(lengths),
        "lora_targets": sorted(model.peft_config["default"].target_modules),
    }
    return trainer, tokenizer, facts


def train(cfg: FinetuneConfig, run_dir: Path, hf_dir: Path) -> dict[str, Any]:
    """Train, save the adapter to ``run_dir/adapter`` and return the metrics (also written to ``train.json``)."""
    from transformers import set_seed

    set_seed(cfg.seed)
    backend = select_backend(cfg.train.backend)
    log.info("train backend: %s", backend)
    trainer, tokenizer, facts = build_trainer(cfg, hf_dir, run_dir, backend)
    resume = last_checkpoint(run_dir / "checkpoints") if cfg.train.resume else None
    if resume:
        log.info("resuming from %s", resume)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - started
    adapter_dir = run_dir / "adapter"
    trainer.save_model(str(adapter_dir))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(adapter_dir))

    eval_metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    state = trainer.state
    steps_run = state.global_step - (int(resume.name.split("-")[-1]) if resume else 0)
    losses = [{"step": h["step"], "loss": h["loss"]} for h in state.log_history if "loss" in h]
    trainable, total = trainer.model.get_nb_trainable_parameters()
    metrics = {
        "backend": backend,
        **facts,
        "global_step": state.global_step,
        "resumed_from": str(resume) if resume else None,
        "train_seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / steps_run, 2) if steps_run > 0 else None,
        "train_loss": result.training_loss,
        "first_loss": losses[0]["loss"] if losses else None,
        "last_loss": losses[-1]["loss"] if losses else None,
        "loss_curve": losses,
        "eval_loss": eval_metrics.get("eval_loss"),
        "eval_perplexity": math.exp(eval_metrics["eval_loss"]) if "eval_loss" in eval_metrics else None,
        "trainable_params": trainable,
        "total_params": total,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "threads": cfg.train.threads,
    }
    (run_dir / "train.json").write_text(json.dumps(metrics, indent=2))
    return metrics
