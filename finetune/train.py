"""``train``: rsLoRA on the prepared rows, loss on the completion only, resumable from the last checkpoint.

Backends:
- ``unsloth`` — Unsloth ``FastLanguageModel`` with the base loaded in 4 bit, used automatically when a CUDA GPU is
  present and Unsloth is installed. (Unsloth refuses to import without an accelerator, so this path cannot be run
  on our CPU machines.)
- ``peft`` — PEFT + TRL ``SFTTrainer`` in fp32 on CPU (or on a GPU without Unsloth).

Tokenization is done here, by llama.cpp, rather than left to TRL: the prompt is tokenized exactly as at
inference (BOS + prompt), the completion is appended, and every prompt position gets the
label -100. Rows longer than ``max_seq_len`` are skipped, not truncated (a cut completion would lose its
``<end_of_turn>`` and teach the model not to stop).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from finetune.config import FinetuneConfig
from finetune.data import read_jsonl

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


def select_backend(requested: str) -> str:
    """``unsloth`` when asked for or when ``auto`` finds CUDA and Unsloth; ``peft`` otherwise."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("unsloth") is not None:
        return "unsloth"
    return "peft"


Encoder = Callable[[str, bool], list[int]]


@contextmanager
def llama_cpp_encoder(gguf_path: Path) -> Iterator[Encoder]:
    """Tokenize with llama.cpp itself (vocabulary only, from the base GGUF): the ids trained on are then exactly the
    ids the gateway feeds the model. transformers' tokenizer converted from this GGUF is not safe for that: it
    adds a spurious token (``"▁▁"``, id 262144, outside the 262,144-row embedding) for double spaces, which both
    differs from llama.cpp and crashes training (36 of the 3,962 MedMCQA training rows)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)

    def encode(text: str, bos: bool) -> list[int]:
        return llm.tokenize(text.encode("utf-8"), add_bos=bos, special=True)

    try:
        yield encode
    finally:
        llm.close()


def tokenize_example(encode: Encoder, prompt: str, completion: str) -> dict[str, list[int]]:
    """``input_ids`` = BOS + prompt + completion; ``labels`` = -100 on BOS and prompt, the ids on the completion.

    The two parts are tokenized separately, as at inference: llama.cpp tokenizes the prompt and the model then
    writes the completion token by token (the prompt ends in ``"\n"``, a token of its own, so nothing merges
    across the boundary)."""
    prompt_ids = encode(prompt, True)
    completion_ids = encode(completion, False)
    return {
        "input_ids": prompt_ids + completion_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + completion_ids,
    }


def tokenize_rows(encode: Encoder, rows: list[dict[str, Any]], max_seq_len: int) -> tuple[list[dict], int]:
    """Tokenized rows that fit ``max_seq_len``, and how many were skipped."""
    out, skipped = [], 0
    for row in rows:
        ex = tokenize_example(encode, row["prompt"], row["completion"])
        if len(ex["input_ids"]) > max_seq_len:
            skipped += 1
            continue
        out.append(ex)
    return out, skipped


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lora_config(cfg: FinetuneConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.targets),
        use_rslora=cfg.lora.rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_peft_backend(cfg: FinetuneConfig, hf_dir: Path):
    """fp32 base + LoRA (PEFT). Returns (model, tokenizer); the model is already wrapped."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    model = AutoModelForCausalLM.from_pretrained(
        str(hf_dir), dtype=torch.float32, attn_implementation="eager"
    )
    model.config.use_cache = False
    return get_peft_model(model, lora_config(cfg)), tokenizer


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
        target_modules=list(cfg.lora.targets),
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
    """``SFTTrainer`` whose loss projects only the completion positions onto the vocabulary.

    Gemma's vocabulary has 262,144 tokens: the LM head is over half the model's compute, and TRL's fused head
    scores every position (and their entropy) on CPU. Keeping only the positions that have a label
    (``logits_to_keep`` as a boolean mask) roughly halves a CPU step on MCQ rows, whose prompts are as long as
    their completions. The loss is the mean cross-entropy over the micro-batch's completion tokens; the Trainer
    divides it by the accumulation steps.
    """
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    class CompletionLossSFTTrainer(SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_is_scaled_for_ga = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"]
            target = labels[:, 1:]
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = target != IGNORE_INDEX
            outputs = model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs.get("attention_mask"),
                logits_to_keep=keep,
                use_cache=False,
            )
            logits = outputs.logits.reshape(-1, outputs.logits.shape[-1]).float()
            loss = F.cross_entropy(logits, target[target != IGNORE_INDEX], reduction="mean")
            return (loss, outputs) if return_outputs else loss

    return CompletionLossSFTTrainer


def last_checkpoint(checkpoints_dir: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not checkpoints_dir.is_dir():
        return None
    found = get_last_checkpoint(str(checkpoints_dir))
    return Path(found) if found else None


def build_trainer(cfg: FinetuneConfig, hf_dir: Path, run_dir: Path, backend: str):
    """The configured ``SFTTrainer`` (model, tokenized data, schedule) and facts about the data."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    t = cfg.train
    torch.set_num_threads(t.threads)
    if backend == "unsloth":
        model, tokenizer = load_unsloth_backend(cfg, hf_dir)
    else:
        model, tokenizer = load_peft_backend(cfg, hf_dir)

    data_dir = run_dir / "data"
    train_rows = read_jsonl(data_dir / "train.jsonl")
    val_rows = read_jsonl(data_dir / "val.jsonl")[: t.max_eval_rows]
    with llama_cpp_encoder(cfg.base.gguf) as encode:
        train_tok, train_skipped = tokenize_rows(encode, train_rows, t.max_seq_len)
        val_tok, val_skipped = tokenize_rows(encode, val_rows, t.max_seq_len)
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
    args = SFTConfig(
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
        max_length=t.max_seq_len,
        disable_tqdm=False,
        save_only_model=False,
    )
    trainer_cls = SFTTrainer if backend == "unsloth" else completion_loss_trainer_class()
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_tok),
        eval_dataset=Dataset.from_list(val_tok) if val_tok else None,
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
