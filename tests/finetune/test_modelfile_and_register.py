"""Modelfile contents, the rsLoRA alpha folded into the llama.cpp adapter, and register's skip without a server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.config import FinetuneConfig
from finetune.export import adapter_for_llama_cpp, llama_cpp_alpha
from finetune.modelfile import modelfile_text, write_modelfile
from finetune.register import register, server_version
from medgpt.templates import named
from tests._net import free_port


def test_adapter_modelfile(tmp_path: Path):
    models = tmp_path / "models"
    path = write_modelfile(models / "medgpt.Modelfile", models / "gemma-3-270m-q4_k_m.gguf",
                           adapter=models / "adapters" / "medgpt-lora.gguf")  # fmt: skip
    text = path.read_text()
    lines = text.splitlines()
    assert lines[0] == "FROM ./gemma-3-270m-q4_k_m.gguf"
    assert lines[1] == "ADAPTER ./adapters/medgpt-lora.gguf"
    assert f'TEMPLATE """{named("gemma").ollama}"""' in text
    assert "PARAMETER stop <end_of_turn>" in lines
    assert "PARAMETER num_ctx 4096" in lines
    assert text.count("FROM ") == 1


def test_modelfile_carries_the_models_own_template_and_stops(tmp_path: Path):
    """SmolLM2's GGUF template is ChatML with a default system turn: its Modelfile writes that layout and stops on
    <|im_end|>, not Gemma's turns."""
    smol = named("chatml", default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    text = modelfile_text(tmp_path / "SmolLM2.gguf", tmp_path, adapter=tmp_path / "a.gguf", template=smol)
    assert f'TEMPLATE """{smol.ollama}"""' in text and "named SmolLM" in text and "<start_of_turn>" not in text
    lines = text.splitlines()
    assert "PARAMETER stop <|im_end|>" in lines and "PARAMETER stop <end_of_turn>" not in lines


def test_export_skips_the_modelfile_of_a_template_without_an_ollama_form(tmp_path: Path):
    from dataclasses import replace

    from finetune.export import _modelfile

    odd = replace(named("chatml"), name="gguf", ollama=None, same_as=None)
    out = _modelfile(tmp_path / "m.Modelfile", tmp_path / "m.gguf", odd)
    assert out["modelfile"] is None and "Ollama" in out["modelfile_skipped"]
    assert not (tmp_path / "m.Modelfile").exists()
    assert _modelfile(tmp_path / "m.Modelfile", tmp_path / "m.gguf", named("chatml"))["modelfile"]


def test_merged_modelfile_has_no_adapter_and_paths_outside_are_relative(tmp_path: Path):
    text = modelfile_text(tmp_path / "elsewhere" / "m-q8_0.gguf", tmp_path / "models")
    assert text.startswith("FROM ../elsewhere/m-q8_0.gguf\n") and "ADAPTER" not in text


@pytest.mark.parametrize(
    "alpha, r, rslora, expected", [(16, 16, True, 64.0), (16, 16, False, 16.0), (8, 4, True, 16.0)]
)
def test_llama_cpp_alpha_keeps_the_trained_scale(alpha, r, rslora, expected):
    got = llama_cpp_alpha(alpha, r, rslora)
    assert got == pytest.approx(expected)
    trained_scale = alpha / (r**0.5 if rslora else r)
    assert got / r == pytest.approx(trained_scale)  # llama.cpp applies alpha / r


def test_adapter_copy_for_llama_cpp_rewrites_alpha(tmp_path: Path):
    src = tmp_path / "adapter"
    src.mkdir()
    (src / "adapter_model.safetensors").write_bytes(b"weights")
    (src / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 16, "use_rslora": True}))
    out, info = adapter_for_llama_cpp(src, tmp_path / "fixed")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["lora_alpha"] == pytest.approx(64.0) and cfg["use_rslora"] is False
    assert info == {"r": 16, "alpha": 16.0, "rslora": True, "llama_cpp_alpha": 64.0}
    assert (
        json.loads((src / "adapter_config.json").read_text())["lora_alpha"] == 16
    )  # the original is untouched


def test_register_skips_clearly_without_a_server(tmp_path: Path):
    models = tmp_path / "models"
    (models / "adapters").mkdir(parents=True)
    (models / "base.gguf").write_bytes(b"GGUF")
    (models / "adapters" / "m-lora.gguf").write_bytes(b"GGUF")
    host = f"http://127.0.0.1:{free_port()}"
    cfg = FinetuneConfig.model_validate(
        {"name": "m", "models_dir": models, "base": {"gguf": models / "base.gguf"}, "ollama": {"host": host},
         "data": {"prompt_format": "gemma"}}  # a named format: the fake GGUF is never read
    )  # fmt: skip
    assert server_version(host) is None
    result = register(cfg)
    assert (
        result["registered"] is False and host in result["reason"] and "ollama create m" in result["reason"]
    )
    assert (
        (models / "m.Modelfile").read_text().startswith("FROM ./base.gguf\nADAPTER ./adapters/m-lora.gguf\n")
    )


def test_register_requires_exported_files(tmp_path: Path):
    cfg = FinetuneConfig.model_validate(
        {"name": "m", "models_dir": tmp_path, "base": {"gguf": tmp_path / "b.gguf"}}
    )
    with pytest.raises(FileNotFoundError, match="export"):
        register(cfg)
