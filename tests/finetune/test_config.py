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


def test_smollm2_config_validates_and_trains_on_one_thread_resumably():
    cfg = load_config(ROOT / "config" / "finetune-smollm2.yaml").resolved(ROOT)
    assert cfg.name == "medgpt-smollm2" and cfg.base.gguf == ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert cfg.data.prompt_format == "auto" and cfg.lora.targets is None and cfg.lora.rslora
    assert cfg.train.threads == 1 and cfg.train.save_steps <= 50 and cfg.train.resume
    assert cfg.run_dir == Path("~/.cache/medgpt/runs/medgpt-smollm2").expanduser()
    assert cfg.adapter_gguf == ROOT / "models" / "adapters" / "medgpt-smollm2-lora.gguf"
    gemma = load_config(ROOT / "config" / "finetune.yaml").resolved(ROOT)
    assert cfg.data.mix == gemma.data.mix  # the same multi-task mix as the CPU recipe
    assert gemma.data.prompt_format == "gemma"  # the Gemma rows stay byte for byte what they were


def test_base_hf_is_a_model_folder_or_a_hub_id(tmp_path: Path):
    folder = tmp_path / "SmolLM2-135M-Instruct"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    cfg = load_config(None, [f"base.hf={folder}", "base.gguf=null"]).resolved(tmp_path)
    assert cfg.base.hf == str(folder) and not cfg.base.hf_is_hub_id()
    # no served GGUF given: it is converted from the folder into the models folder
    assert cfg.base.gguf == tmp_path / "models" / "SmolLM2-135M-Instruct-q8_0.gguf"
    relative = load_config(None, ["base.hf=./SmolLM2-135M-Instruct"]).resolved(tmp_path)
    assert relative.base.hf == str(folder) and relative.base.gguf.name == "gemma-3-270m-q4_k_m.gguf"
    hub = load_config(None, ["base.hf=HuggingFaceTB/SmolLM2-135M-Instruct"]).resolved(tmp_path)
    assert hub.base.hf == "HuggingFaceTB/SmolLM2-135M-Instruct" and hub.base.hf_is_hub_id()

    with pytest.raises(ValueError, match="neither an existing model folder"):
        load_config(None, ["base.hf=./no/such/folder"]).resolved(tmp_path)
    with pytest.raises(ValueError, match="neither an existing model folder"):
        load_config(None, ["base.hf=a/b/c"]).resolved(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_config(None, [f"base.hf={tmp_path / 'empty'}"]).resolved(tmp_path)
    with pytest.raises(ValidationError, match="give gguf"):
        load_config(None, ["base.gguf=null"])
    with pytest.raises(ValidationError, match="lora.targets"):
        load_config(None, ["lora.targets=[]"])


def test_base_hf_of_another_model_is_refused(tmp_path: Path):
    """Training on weights that are not the served GGUF's would export an adapter for another model."""
    import json

    from finetune.base_model import check_same_model

    gguf = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
    if not gguf.exists():
        pytest.skip("the Gemma GGUF is not here")
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 30, "hidden_size": 576, "vocab_size": 49152}))
    with pytest.raises(ValueError, match="is not the model of base.gguf"):
        check_same_model(tmp_path, gguf)
    (tmp_path / "config.json").write_text(
        json.dumps({"text_config": {"num_hidden_layers": 18, "hidden_size": 640, "vocab_size": 262144}})
    )
    check_same_model(tmp_path, gguf)  # the same shape: accepted
