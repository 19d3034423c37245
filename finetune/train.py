"""``train``: rsLoRA on the prepared rows, loss on the completion only, resumable from the last checkpoint.

Backends:
- ``unsloth`` — Unsloth ``FastLanguageModel`` with the base loaded in 4 bit, used automatically when a CUDA GPU is
  present and Unsloth is installed. (Unsloth refuses to import without an accelerator, so this path cannot be run
  on our CPU machines.)
- ``peft`` — PEFT + the transformers ``Trainer`` (fp32 on CPU, bf16 on a GPU without Unsloth).

Tokenization is ours, by llama.cpp: the prompt is tokenized exactly as at inference (BOS + prompt), the completion
is appended, and every prompt position gets the label -100. Rows longer than ``max_seq_len`` are skipped, not
truncated (a cut completion would lose its ``<end_of_turn>`` and teach the model not to stop). The token ids are
cached beside the data (``data/<split>.tokens.jsonl``), so a run folder carried to a GPU machine trains there
without llama-cpp-python.
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


def tokenized_splits(
    cfg: FinetuneConfig, data_dir: Path, splits: tuple[str, ...] = ("train", "val")
) -> dict[str, tuple[list[dict], int]]:
    """For each split, the rows of ``data_dir/<split>.jsonl`` that fit ``max_seq_len``, tokenized, and how many were
    skipped.

    The ids are cached in ``<split>.tokens.jsonl`` under a key of the split file's and the base GGUF's SHA-256
    and ``max_seq_len``; a stale cache (new data, another base) is rebuilt, which needs llama-cpp-python (the
    vocabulary is loaded once for all stale splits, the GGUF hashed once for all)."""
    from medgpt.models import file_sha256

    gguf_sha256 = file_sha256(cfg.base.gguf)
    out: dict[str, tuple[list[dict], int]] = {}
    stale = []
    for split in splits:
        source, cache = data_dir / f"{split}.jsonl", data_dir / f"{split}.tokens.jsonl"
        key = {"rows_sha256": file_sha256(source), "gguf_sha256": gguf_sha256, "max_seq_len": cfg.train.max_seq_len}
        if cache.exists():
            with cache.open() as fh:
                header = json.loads(fh.readline())
                if header.get("key") == key:
                    out[split] = [_with_labels(json.loads(line)) for line in fh], header["skipped"]
                    continue
        stale.append((source, cache, key, split))
    if stale:
        with llama_cpp_encoder(cfg.base.gguf) as encode:
            for source, cache, key, split in stale:
                rows, skipped = tokenize_rows(encode, read_jsonl(source), cfg.train.max_seq_len)
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
    """fp32 base + LoRA (PEFT). Returns (model, tokenizer); the model is already wrapped.

    Attention is eager on CPU (what the CPU runs were measured with) and SDPA on a GPU: eager keeps every layer's
    full attention matrix for the backward pass, which for 16 rows of 4,096 tokens is over 70 GiB."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    model = AutoModelForCausalLM.from_pretrained(
        str(hf_dir),
        dtype=torch.float32,
        attn_implementation="sdpa" if torch.cuda.is_available() else "eager",
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
        data_collator=pad_batch(tokenizer.pad_token_id),
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
