"""Registering GGUFs with Ollama: the create request carries the Modelfile's FROM/ADAPTER/TEMPLATE/stop."""

from pathlib import Path

from medgpt.ollama_register import create_request, register
from medgpt.prompts import OLLAMA_TEMPLATES
from medgpt.settings import ModelSpec


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
    req = create_request(spec, {str(base): "sha256:a", str(adapter): "sha256:b"})
    assert req["model"] == "medgpt"
    assert req["files"] == {"base.gguf": "sha256:a"} and req["adapters"] == {"lora.gguf": "sha256:b"}
    assert req["template"] == OLLAMA_TEMPLATES["gemma"]
    assert req["parameters"]["stop"] == ["<end_of_turn>"] and req["parameters"]["num_ctx"] == 4096


def test_register_uploads_each_file_once_and_skips_missing(tmp_path):
    base = tmp_path / "base.gguf"
    base.write_bytes(b"GGUF")
    adapter = tmp_path / "lora.gguf"
    adapter.write_bytes(b"GGUF")
    specs = [ModelSpec(name="gemma3-270m", path=base), ModelSpec(name="medgpt", path=base, adapter=adapter),
             ModelSpec(name="ghost", path=tmp_path / "missing.gguf")]
    client = RecordingClient()
    assert register(client, specs) == ["gemma3-270m", "medgpt"]
    assert client.blobs == ["base.gguf", "lora.gguf"]
    assert "adapters" not in client.created[0] and client.created[1]["adapters"] == {"lora.gguf": "sha256:" + "2".zfill(64)}
