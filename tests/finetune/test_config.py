"""The config is validated: typos fail, overrides apply, the shipped YAML is valid, rsLoRA's scale is right."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from finetune.config import FinetuneConfig, load_config

from .conftest import ROOT


def test_shipped_config_validates_and_resolves_paths():
    cfg = load_config(ROOT / "config" / "finetune.yaml").resolved(ROOT)
    assert cfg.name == "medgpt"
    assert cfg.lora.rslora and cfg.lora.targets == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    ]  # fmt: skip
    assert cfg.data.train_files == [ROOT / "data" / "mcq" / "medmcqa_train_pool.jsonl"]
    d = cfg.data
    sources = [d.mts_dialog, d.aci_bench, d.meqsum, d.mtsamples, d.pubmedqa, d.note_instructions]
    files = d.train_files + d.eval_files + d.eval_text_files + sources
    assert all(p.exists() for p in files)
    assert d.mix is not None and d.mix["mcq"] > 0 and d.mix["note_pubmedqa"] > 0 and d.mix["summary_soap"] > 0
    # checkpoints live outside the work tree, so a long CPU run resumes after the clone is gone
    assert cfg.run_dir == Path("~/.cache/medgpt/runs/medgpt").expanduser()
    assert cfg.adapter_gguf == ROOT / "models" / "adapters" / "medgpt-lora.gguf"
    # the project never reads the shared folder at run time
    assert not any("shared" in p.parts for p in files)


def test_overrides_use_yaml_values_and_unknown_keys_fail():
    cfg = load_config(None, ["train.max_steps=7", "lora.targets=[q_proj, v_proj]", "data.hf_dataset=x/y"])
    assert (
        cfg.train.max_steps == 7 and cfg.lora.targets == ["q_proj", "v_proj"] and cfg.data.hf_dataset == "x/y"
    )
    with pytest.raises(ValidationError):
        load_config(None, ["train.max_step=7"])  # typo
    with pytest.raises(ValidationError):
        load_config(None, ["lora.r=0"])
    with pytest.raises(ValueError):
        load_config(None, ["train.max_steps"])


def test_rslora_scale():
    cfg = FinetuneConfig.model_validate({"lora": {"r": 16, "alpha": 16}})
    assert cfg.lora.scale == pytest.approx(4.0)
    cfg = FinetuneConfig.model_validate({"lora": {"r": 16, "alpha": 16, "rslora": False}})
    assert cfg.lora.scale == pytest.approx(1.0)


def test_relative_paths_anchor_at_root_not_cwd(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None).resolved(ROOT)
    assert cfg.models_dir == ROOT / "models"


def test_layers_yaml_then_environment_then_overrides(monkeypatch):
    """Read as the gateway reads its settings: the YAML, under MEDGPT_FINETUNE_* variables, under --set."""
    shipped = ROOT / "config" / "finetune.yaml"
    monkeypatch.setenv("MEDGPT_FINETUNE_TRAIN__THREADS", "1")
    cfg = load_config(shipped, ["train.max_steps=20"])
    assert (cfg.train.threads, cfg.train.max_steps) == (1, 20)
    # one key of a section overridden, the rest of the section still the YAML's
    train = yaml.safe_load(shipped.read_text())["train"]
    assert (cfg.train.learning_rate, cfg.train.max_seq_len) == (train["learning_rate"], train["max_seq_len"])
    assert load_config(shipped, ["train.threads=3"]).train.threads == 3
    with pytest.raises(FileNotFoundError):
        load_config(ROOT / "config" / "no-such-file.yaml")


def test_project_root_honours_medgpt_home_when_called(tmp_path: Path, monkeypatch):
    from medgpt.settings import project_root

    assert project_root() == ROOT
    monkeypatch.setenv("MEDGPT_HOME", str(tmp_path))
    assert project_root() == tmp_path
