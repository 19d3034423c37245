"""A tiny multi-task run end to end: prepare the mix (a few rows of every mode) → train → export the adapter → the
gateway's llama.cpp engine serves every mode through ``medgpt.tasks`` with that adapter, and no answer is degenerate
by the evaluator's own check (:func:`medgpt.guards.degenerate`).

The run is small enough to memorise its rows (high learning rate, many passes), so what is asserted is the pipeline:
training rows are byte for byte the serving prompts, every target ends with the stop token (the model stops on its
own, ``finish_reason == "stop"``), and the adapter reaches the engine at its trained strength. The base model on the
same prompts echoes or loops, which is why the test can fail.
"""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("llama_cpp")

from finetune.__main__ import main
from medgpt import tasks
from medgpt.guards import degenerate

from .conftest import ROOT

pytestmark = [pytest.mark.finetune, pytest.mark.timeout(1800)]

MODES = ["mcq", "open", "summary_dialogue", "summary_question", "note_pubmedqa"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    from medgpt.models import ensure_default_gguf

    tmp = tmp_path_factory.mktemp("ftmix")
    base = ensure_default_gguf(ROOT / "models")
    config = {
        "name": "tinymix",
        "seed": 3,
        "output_dir": str(tmp / "runs"),
        "models_dir": str(tmp / "models"),
        "base": {"gguf": str(base)},
        "data": {"mix": {m: 1 for m in MODES}, "max_chars": 1100, "val_fraction": 0, "max_analysis_chars": 160},
        "lora": {"r": 16, "alpha": 16},
        "train": {"max_steps": 50, "grad_accum": 1, "max_seq_len": 384, "learning_rate": 1e-3, "warmup_ratio": 0,
                  "lr_scheduler": "constant", "save_steps": 100, "logging_steps": 10, "eval_steps": None},
        "export": {"merged_quants": [], "check_prompts": 0},
        "ollama": {"enabled": False},
    }  # fmt: skip
    cfg_path = tmp / "finetune.yaml"
    cfg_path.write_text(json.dumps(config))  # JSON is YAML
    assert main(["--config", str(cfg_path), "prepare", "train", "export"]) == 0
    rows = [json.loads(line) for line in (tmp / "runs" / "tinymix" / "data" / "train.jsonl").open()]
    return {"base": base, "adapter": tmp / "models" / "adapters" / "tinymix-lora.gguf", "rows": rows}


def test_the_mix_has_one_row_of_every_mode_with_serving_prompts(run):
    assert sorted(r["task"] for r in run["rows"]) == sorted(MODES)
    for row in run["rows"]:
        assert row["prompt"].startswith("<start_of_turn>user\n") and row["prompt"].endswith("<start_of_turn>model\n")
        assert row["completion"].endswith("<end_of_turn>")


def _user_content(row: dict) -> str:
    return row["prompt"].removeprefix("<start_of_turn>user\n").removesuffix("<end_of_turn>\n<start_of_turn>model\n")


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def test_engine_serves_every_mode_without_degenerate_output(run):
    """Each training row's mode is asked through its task (same prompt builders as the gateway)."""
    from medgpt.engines.llamacpp import LlamaCppEngine
    from medgpt.settings import LlamaCppSettings, ModelSpec

    spec = ModelSpec(name="tinymix", path=run["base"], adapter=run["adapter"], n_ctx=1024)
    engine = LlamaCppEngine([spec], LlamaCppSettings(n_threads=1, max_loaded=1))
    sampling = tasks.Sampling(max_tokens=160)

    async def ask(row: dict):
        content = _user_content(row)
        if row["task"] == "mcq":
            question = _between(content, "### Question:", "### Options:")
            options = dict(line.split(". ", 1) for line in content.split("### Options:\n", 1)[1].splitlines())
            result = await tasks.answer_mcq(engine, "tinymix", question, options, sampling=sampling)
            return result.analysis, result.choice in options and result.well_formed
        if row["task"] == "open":
            question = content.split("\n\nQuestion: ", 1)[1]
            result = await tasks.answer_open(engine, "tinymix", question, sampling=sampling)
        elif row["task"] == "note_pubmedqa":
            note = _between(content, "[Note Begin]", "[Note End]")
            question = _between(content, "[Instruction Begin]", "[Instruction End]")
            result = await tasks.answer_note(engine, "tinymix", note, question, sampling=sampling)
        else:
            text = _between(content, "[Text Begin]", "[Text End]")
            summary = await tasks.summarize(engine, "tinymix", text, style="brief", sampling=sampling)
            return summary.summary, True
        return result.text, result.finish_reason == "stop"

    async def go():
        try:
            return {row["task"]: await ask(row) for row in run["rows"]}
        finally:
            await engine.aclose()

    answers = asyncio.run(go())
    for task, (text, ok) in answers.items():
        row = next(r for r in run["rows"] if r["task"] == task)
        assert degenerate(text, _user_content(row)) is None, (task, text)
        assert ok, (task, text)
