"""Completion-only masking, tokenization identical to llama.cpp's, and what the trainer actually feeds the model.

Needs torch/transformers (the ``finetune`` extra) and the base model (the dequantized copy of the project's GGUF is
built once into ~/.cache/medgpt, 1-2 minutes).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from finetune.config import FinetuneConfig
from finetune.data import example_from_mcq, write_jsonl
from finetune.train import IGNORE_INDEX, build_trainer, llama_cpp_encoder, lora_targets, tokenize_example
from medgpt.prompts import mcq_messages
from medgpt.templates import named

from .conftest import ROOT

pytestmark = [pytest.mark.finetune, pytest.mark.timeout(1800)]  # setup builds caches on a fresh machine

GGUF = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
QUESTION = "Which drug dissolves the clot in acute ischaemic stroke?"
OPTIONS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Alteplase"}


@pytest.fixture(scope="module")
def hf_base() -> Path:
    from finetune.base_model import ensure_hf_base
    from finetune.config import BaseModelConfig

    return ensure_hf_base(BaseModelConfig(gguf=ROOT / "models" / "gemma-3-270m-q4_k_m.gguf").model_copy(
        update={"hf_cache_dir": Path("~/.cache/medgpt/hf-base").expanduser()}))  # fmt: skip


@pytest.fixture(scope="module")
def encode():
    pytest.importorskip("llama_cpp")
    with llama_cpp_encoder(ROOT / "models" / "gemma-3-270m-q4_k_m.gguf", named("gemma")) as enc:
        yield enc


@pytest.fixture(scope="module")
def tokenizer(hf_base: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(hf_base))


def _example(explanation: str = "Thrombolysis within 4.5 hours restores flow in ischaemic stroke."):
    from finetune.config import DataConfig
    from finetune.data import MCQ

    mcq = MCQ("s1", QUESTION, OPTIONS, "D", explanation, "t")
    return example_from_mcq(mcq, DataConfig(prompt_format="gemma"))


def test_labels_are_ignored_on_the_prompt_and_kept_on_the_completion(encode, tokenizer):
    ex = _example()
    tok = tokenize_example(encode, ex["prompt"], ex["completion"])
    ids, labels = tok["input_ids"], tok["labels"]
    n_prompt = len(encode.prompt(ex["prompt"]))
    assert ids[0] == tokenizer.bos_token_id == 2
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert all(label != IGNORE_INDEX for label in labels[n_prompt:])
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tokenizer.decode(ids[n_prompt:]) == ex["completion"]
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<end_of_turn>") == 106  # the model learns to stop
    assert tokenizer.decode(ids[1:n_prompt]) == ex["prompt"]
    # the prompt the engine sends is the prompt trained on, token for token (the gateway's own tokenizer call)
    from medgpt.engines.gguf import GGUFVocabs
    from medgpt.settings import ModelSpec

    spec = ModelSpec(name="gemma", path=GGUF, prompt_format="auto")
    vocabs = GGUFVocabs()
    assert vocabs.template(spec).render(mcq_messages(QUESTION, OPTIONS)) == ex["prompt"]
    assert ids[:n_prompt] == vocabs.tokenize(spec, ex["prompt"])
    # and what llama.cpp reads from the whole text with special tokens on (what the first adapters trained on)
    assert ids == encode.vocab.tokenize((ex["prompt"] + ex["completion"]).encode(), add_bos=True, special=True)


def test_double_spaces_stay_inside_the_vocabulary(encode, tokenizer):
    """Regression: transformers' GGUF-converted tokenizer maps "  " to id 262144, past the embedding; training
    tokenizes with llama.cpp, which the gateway uses too."""
    ex = _example("Two  spaces  here, and   three there.")
    ids = tokenize_example(encode, ex["prompt"], ex["completion"])["input_ids"]
    assert max(ids) < 262144
    assert tokenizer.decode(ids[1:]) == ex["prompt"] + ex["completion"]


def test_trainer_batches_keep_the_mask_and_pad_with_ignore(tmp_path: Path, hf_base: Path, tokenizer):
    rows = [_example(), _example("Short."), _example("A longer analysis. " * 10)]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    write_jsonl(tmp_path / "data" / "val.jsonl", rows[:1])
    cfg = FinetuneConfig.model_validate(
        {
            "train": {"batch_size": 3, "max_steps": 1, "threads": 1},
            "output_dir": tmp_path,
            "base": {"gguf": GGUF},
        }
    )
    trainer, _, facts = build_trainer(cfg, hf_base, tmp_path, "peft")
    assert facts["train_rows"] == 3 and facts["train_rows_skipped_too_long"] == 0
    batch = next(iter(trainer.get_train_dataloader()))
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        real = [i for i, t in enumerate(ids) if t != tokenizer.pad_token_id]
        prompt_len = len(
            tokenizer(rows[0]["prompt"])["input_ids"]
        )  # same prompt in every row (no double spaces)
        assert all(labels[i] == IGNORE_INDEX for i in range(prompt_len))
        assert all(labels[i] == IGNORE_INDEX for i in range(len(ids)) if i not in real)
        completion = [t for t in labels if t != IGNORE_INDEX]
        assert completion[-1] == 106 and tokenizer.decode(completion).startswith("<analysis>")
    # the completion-only loss equals the plain causal-LM loss restricted to completion tokens
    import torch

    model = trainer.model.eval()
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
    with torch.no_grad():
        ours = trainer.compute_loss(model, inputs)
        reference = model(**inputs).loss
    assert ours.item() == pytest.approx(reference.item(), rel=2e-3)


def test_rows_too_long_are_skipped_not_truncated(tmp_path: Path, hf_base: Path, encode):
    rows = [_example("Short."), _example("Very long reasoning. " * 60)]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    write_jsonl(tmp_path / "data" / "val.jsonl", rows[:1])
    fits = len(tokenize_example(encode, rows[0]["prompt"], rows[0]["completion"])["input_ids"])
    cfg = FinetuneConfig.model_validate(
        {"train": {"max_seq_len": fits, "max_steps": 1}, "output_dir": tmp_path, "base": {"gguf": GGUF}}
    )
    _, _, facts = build_trainer(cfg, hf_base, tmp_path, "peft")
    assert facts["train_rows"] == 1 and facts["train_rows_skipped_too_long"] == 1


def test_token_ids_are_cached_beside_the_data_and_rebuilt_when_it_changes(tmp_path: Path, encode, monkeypatch):
    """The cache lets a run folder carried to a GPU machine train without llama-cpp-python; new data or another
    base must not reuse stale ids."""
    import finetune.train as train_mod
    from finetune.train import tokenized_splits

    rows = [_example(), _example("Short.")]
    data_dir = tmp_path / "data"
    write_jsonl(data_dir / "train.jsonl", rows)
    cfg = FinetuneConfig.model_validate({"output_dir": tmp_path, "base": {"gguf": GGUF}})
    built, skipped = tokenized_splits(cfg, data_dir, ("train",))["train"]
    assert skipped == 0
    assert built == [tokenize_example(encode, r["prompt"], r["completion"]) for r in rows]
    assert (data_dir / "train.tokens.jsonl").exists()

    def no_llama_cpp(*args):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(train_mod, "llama_cpp_encoder", no_llama_cpp)
    assert tokenized_splits(cfg, data_dir, ("train",))["train"] == (built, 0)

    write_jsonl(data_dir / "train.jsonl", rows[:1])
    with pytest.raises(AssertionError, match="cache should have been used"):
        tokenized_splits(cfg, data_dir, ("train",))  # new rows: the stale cache is not read
    shorter = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_seq_len": 64})})
    monkeypatch.undo()
    assert tokenized_splits(shorter, data_dir, ("train",))["train"] == ([], 1)  # and a new max_seq_len rebuilds too


def _tiny(arch: str):
    """A randomly initialised two-layer model of ``arch`` (no files): its module names are the real ones."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, Qwen2Config

    kw = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
          "num_key_value_heads": 1, "vocab_size": 128}  # fmt: skip
    config = {"llama": LlamaConfig, "gemma3_text": Gemma3TextConfig, "qwen2": Qwen2Config}[arch](**kw)
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "qwen2"])
def test_lora_targets_come_from_the_models_decoder_linears(arch):
    model = _tiny(arch)
    assert lora_targets(model) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert lora_targets(model, ["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match="c_attn"):  # a GPT-2 name on a Llama-style model: named, not ignored
        lora_targets(model, ["c_attn", "q_proj"])
