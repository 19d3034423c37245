"""A tiny real run: prepare → train (2 steps, then resumed to 3) → export (adapter + merged q8_0/q4_k_m) → register
(skipped: no server), then llama.cpp loads every artifact and generates, and the adapter GGUF is checked to apply
at the trained strength (the rsLoRA scale trap).

CPU only, a few minutes: 12 rows, short sequences, 1 thread.
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
from tests._net import free_port

from .conftest import ROOT

pytestmark = [pytest.mark.finetune, pytest.mark.timeout(1800)]  # setup builds caches on a fresh machine


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    from medgpt.models import ensure_default_gguf

    tmp = tmp_path_factory.mktemp("ft")
    base = ensure_default_gguf(ROOT / "models")
    config = {
        "name": "tiny",
        "seed": 7,
        "output_dir": str(tmp / "runs"),
        "models_dir": str(tmp / "models"),
        "base": {"gguf": str(base)},
        "data": {"max_rows": 12, "val_fraction": 0.25, "max_analysis_chars": 120},
        "lora": {"r": 8, "alpha": 16},
        "train": {"max_steps": 2, "grad_accum": 1, "max_seq_len": 256, "learning_rate": 5e-3, "warmup_ratio": 0,
                  "lr_scheduler": "constant", "save_steps": 1, "logging_steps": 1, "max_eval_rows": 2},
        "export": {"merged_quants": ["q8_0", "q4_k_m"], "keep_intermediate": True, "check_prompts": 0},
        "ollama": {"host": f"http://127.0.0.1:{free_port()}"},
    }  # fmt: skip
    cfg_path = tmp / "finetune.yaml"
    cfg_path.write_text(json.dumps(config))  # JSON is YAML
    assert main(["--config", str(cfg_path), "prepare", "train"]) == 0
    first = json.loads((tmp / "runs" / "tiny" / "train.json").read_text())
    # resume: a longer schedule continues from the last checkpoint instead of starting again
    assert main(["--config", str(cfg_path), "--set", "train.max_steps=3", "train", "export", "register"]) == 0
    return {
        "tmp": tmp,
        "base": base,
        "run_dir": tmp / "runs" / "tiny",
        "models": tmp / "models",
        "first": first,
    }


def test_run_record(run):
    record = json.loads((run["run_dir"] / "run.json").read_text())
    assert set(record["stages"]) == {"prepare", "train", "export", "register"}
    assert record["seed"] == 7 and record["config"]["lora"]["rslora"] is True
    prep = record["stages"]["prepare"]
    assert len(prep["sources"][0]["sha256"]) == 64 and prep["train_rows"] + prep["val_rows"] == 12
    assert (run["run_dir"] / "config.resolved.yaml").exists()
    assert record["stages"]["register"]["registered"] is False


def test_training_ran_and_resumed(run):
    assert run["first"]["global_step"] == 2 and run["first"]["resumed_from"] is None
    train = json.loads((run["run_dir"] / "train.json").read_text())
    assert train["global_step"] == 3 and train["resumed_from"].endswith("checkpoint-2")
    assert math.isfinite(train["train_loss"]) and math.isfinite(train["eval_loss"])
    assert train["trainable_params"] > 0 and train["trainable_params"] < 0.05 * train["total_params"]
    losses = [json.loads(line) for line in (run["run_dir"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses if "loss" in r] == [1, 2, 3]


def test_artifacts_written(run):
    from gguf import GGUFReader

    models = run["models"]
    adapter = models / "adapters" / "tiny-lora.gguf"
    reader = GGUFReader(str(adapter))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(
        16 * math.sqrt(8)
    )  # rsLoRA folded in
    assert 1 < adapter.stat().st_size / 2**20 < 20
    record = json.loads(adapter.with_suffix(".json").read_text())
    assert record["seed"] == 7 and record["train"]["global_step"] == 3 and record["data"]["train_sha256"]
    for quant in ("q8_0", "q4_k_m"):
        assert (models / f"tiny-{quant}.gguf").stat().st_size > 100 * 2**20
        assert (models / f"tiny-{quant}.Modelfile").read_text().startswith(f"FROM ./tiny-{quant}.gguf\n")
    assert "ADAPTER ./adapters/tiny-lora.gguf" in (models / "tiny.Modelfile").read_text()


def test_engine_generates_with_each_artifact(run):
    """The gateway's llama.cpp engine loads base + adapter and both merged quantizations and writes tokens."""
    from medgpt.engines.base import GenerationRequest, complete
    from medgpt.engines.llamacpp import LlamaCppEngine
    from medgpt.prompts import mcq_messages
    from medgpt.settings import LlamaCppSettings, ModelSpec

    models = run["models"]
    specs = [
        ModelSpec(
            name="tiny-lora", path=run["base"], adapter=models / "adapters" / "tiny-lora.gguf", n_ctx=512
        ),
        ModelSpec(name="tiny-q8", path=models / "tiny-q8_0.gguf", n_ctx=512),
        ModelSpec(name="tiny-q4", path=models / "tiny-q4_k_m.gguf", n_ctx=512),
    ]
    engine = LlamaCppEngine(specs, LlamaCppSettings(n_threads=1, max_loaded=1))
    messages = mcq_messages(
        "Which vitamin deficiency causes scurvy?", {"A": "A", "B": "C", "C": "D", "D": "K"}
    )

    async def go():
        try:
            return [await complete(engine, GenerationRequest(model=s.name, messages=messages, max_tokens=6))
                    for s in specs]  # fmt: skip
        finally:
            await engine.aclose()

    for result in asyncio.run(go()):
        assert result.completion_tokens > 0 and result.text


def test_adapter_gguf_applies_at_the_trained_strength(run):
    """llama.cpp(base f16 + adapter GGUF) must match the merged f16 model, not the base: with the rsLoRA scale
    lost (alpha/r instead of alpha/sqrt(r)) the adapter would apply ~2.8x too weakly at r=8 and this fails."""
    import numpy as np
    from llama_cpp import Llama

    from finetune.base_model import ensure_hf_base
    from finetune.config import BaseModelConfig
    from finetune.llama_cpp_tools import convert_hf_to_gguf, ensure_converters

    tools = ensure_converters("0.3.36", Path("~/.cache/medgpt").expanduser())
    hf_base = ensure_hf_base(BaseModelConfig(gguf=run["base"]).model_copy(
        update={"hf_cache_dir": Path("~/.cache/medgpt/hf-base").expanduser()}))  # fmt: skip
    base_f16 = convert_hf_to_gguf(tools, hf_base, run["tmp"] / "base-f16.gguf", "f16")
    merged_f16 = run["run_dir"] / "export" / "tiny-f16.gguf"
    adapter = run["models"] / "adapters" / "tiny-lora.gguf"
    rows = [json.loads(line) for line in (run["run_dir"] / "data" / "train.jsonl").read_text().splitlines()]
    text = (rows[0]["prompt"] + rows[0]["completion"]).encode()

    def logits(model: Path, lora: Path | None = None) -> np.ndarray:
        kwargs = {"lora_path": str(lora)} if lora else {}
        llm = Llama(model_path=str(model), n_ctx=512, n_threads=1, logits_all=True, verbose=False, **kwargs)
        try:
            tokens = llm.tokenize(text, add_bos=True, special=True)
            llm.eval(tokens)
            return np.array(
                llm.scores[llm.n_tokens - 16 : llm.n_tokens], dtype=np.float64
            )  # completion positions
        finally:
            llm.close()

    base, merged, with_adapter = logits(base_f16), logits(merged_f16), logits(base_f16, adapter)
    tune = np.abs(merged - base).max()
    error = np.abs(with_adapter - merged).max()
    assert tune > 0.5, "the tiny run should move the logits visibly"
    assert error < 0.2 * tune, f"adapter GGUF differs from the merge by {error:.3f} (tune moved {tune:.3f})"
