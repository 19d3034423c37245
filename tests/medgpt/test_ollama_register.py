"""Registering GGUFs with Ollama: the create request carries the Modelfile's FROM/ADAPTER/TEMPLATE/stop."""

from pathlib import Path

import pytest

from medgpt.models import PinMismatch, file_sha256
from medgpt.ollama_register import create_request, register
from medgpt.settings import ModelSpec
from medgpt.templates import named


class RecordingClient:
    """Records calls; stands in for ``ollama.Client`` (no Ollama server can run here)."""

    def __init__(self):
        self.blobs, self.created = [], []

    def create_blob(self, path):
        self.blobs.append(Path(path).name)
        return f"sha256:{len(self.blobs):064d}"

    def create(self, **kwargs):
        self.created.append(kwargs)


def test_create_request_has_template_stop_and_adapter(tmp_path):
    base, adapter = tmp_path / "base.gguf", tmp_path / "lora.gguf"
    spec = ModelSpec(name="medgpt", path=base, adapter=adapter, n_ctx=4096)
    req = create_request(spec, {str(base): "sha256:a", str(adapter): "sha256:b"}, named("gemma"))
    assert req["model"] == "medgpt"
    assert req["files"] == {"base.gguf": "sha256:a"} and req["adapters"] == {"lora.gguf": "sha256:b"}
    assert req["template"] == named("gemma").ollama
    assert req["parameters"]["stop"] == ["<end_of_turn>"] and req["parameters"]["num_ctx"] == 4096


def test_register_uploads_each_file_once_and_skips_missing(tmp_path):
    base = tmp_path / "base.gguf"
    base.write_bytes(b"GGUF")
    adapter = tmp_path / "lora.gguf"
    adapter.write_bytes(b"GGUF")
    # stand-in files, not GGUFs: the format is named, so nothing reads them for a template
    specs = [ModelSpec(name="gemma3-270m", path=base, prompt_format="gemma"),
             ModelSpec(name="medgpt", path=base, adapter=adapter, prompt_format="gemma"),
             ModelSpec(name="ghost", path=tmp_path / "missing.gguf")]
    client = RecordingClient()
    assert register(client, specs) == ["gemma3-270m", "medgpt"]
    assert client.blobs == ["base.gguf", "lora.gguf"]
    assert "adapters" not in client.created[0] and client.created[1]["adapters"] == {"lora.gguf": "sha256:" + "2".zfill(64)}


class HashingClient(RecordingClient):
    """As :class:`RecordingClient`, but returns the digest Ollama stores a blob under: its real SHA-256."""

    def create_blob(self, path):
        super().create_blob(path)
        return f"sha256:{file_sha256(path)}"


def test_pinned_files_are_uploaded_only_when_their_digests_match(tmp_path):
    base, adapter = tmp_path / "base.gguf", tmp_path / "lora.gguf"
    base.write_bytes(b"GGUF base")
    adapter.write_bytes(b"GGUF adapter")
    good = ModelSpec(name="medgpt", path=base, sha256=file_sha256(base), adapter=adapter,
                     adapter_sha256=file_sha256(adapter), prompt_format="gemma")  # fmt: skip
    client = HashingClient()
    assert register(client, [good]) == ["medgpt"] and client.blobs == ["base.gguf", "lora.gguf"]

    client = HashingClient()
    swapped = good.model_copy(update={"adapter_sha256": "0" * 64})
    with pytest.raises(PinMismatch, match="adapter of model 'medgpt'"):
        register(client, [swapped])
    assert client.blobs == ["base.gguf"] and client.created == []  # the adapter never left, nothing was created

    client = RecordingClient()  # stores the blob under another digest than the pinned file's
    with pytest.raises(PinMismatch, match="stored by Ollama"):
        register(client, [good])
    assert client.created == []


def test_a_ggufs_own_template_is_registered_as_the_go_template_that_renders_it(tmp_path):
    """The real SmolLM2 GGUF (its own ChatML template with a default system turn): Ollama gets the Go template of
    the named format that renders the same text (tests/medgpt/test_templates.py runs it with Go)."""
    from medgpt.models import ensure_smollm2_gguf

    smollm2 = ensure_smollm2_gguf(Path(__file__).parents[2] / "models")
    client = RecordingClient()
    assert register(client, [ModelSpec(name="smollm2-135m", path=smollm2)]) == ["smollm2-135m"]
    template = client.created[0]["template"]
    assert template.startswith('{{- if ne (index .Messages 0).Role "system" }}<|im_start|>system\nYou are a helpful')
    assert client.created[0]["parameters"]["stop"] == ["<|im_end|>"]


def test_a_template_with_no_ollama_equivalent_stops_the_run_before_any_upload(tmp_path):
    from medgpt.templates import TemplateError, from_jinja

    zephyr = from_jinja("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + eos_token }}"
                        "{% endfor %}{{ '<|assistant|>\n' }}", "<s>", "</s>")  # fmt: skip
    with pytest.raises(TemplateError, match="no format MedGPT can write"):
        create_request(ModelSpec(name="zephyr", path=tmp_path / "z.gguf"), {str(tmp_path / "z.gguf"): "sha256:a"}, zephyr)
