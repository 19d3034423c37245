"""Model-file pins: the configured SHA-256 digests are the files' (a stale pin fails here, loudly), and
``python -m medgpt.models pin`` writes them into a config without touching anything else."""

from __future__ import annotations

import os

import pytest
import yaml

from medgpt.models import FileDigests, PinMismatch, configured_digests, file_sha256, main, pin_text
from tests.conftest import ROOT

CONFIG = ROOT / "config" / "medgpt.yaml"


def test_every_configured_model_file_is_pinned_to_its_digest():
    files = configured_digests(CONFIG, ROOT)
    assert {"medgpt", "gemma3-270m"} <= set(files)
    for name, fields in files.items():
        for field, (path, pinned) in fields.items():
            assert path.exists(), f"{name}: {path} is missing"
            assert pinned == file_sha256(path), (
                f"{name} {field}: {path.name} is not its pin in config/medgpt.yaml; if the new file is the intended"
                " one, run: python -m medgpt.models pin"
            )


def test_pin_writes_the_digests_and_check_reports_stale_pins(tmp_path):
    config = tmp_path / "medgpt.yaml"
    base, adapter = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf", ROOT / "models" / "adapters" / "medgpt-lora.gguf"
    text = (
        "# a comment that stays\nengine: llamacpp\nmodels:\n"
        f"  - name: one\n    path: {base}\n    sha256: {'0' * 64}  # stale\n    adapter: {adapter}\n"
        f"  - name: two\n    path: {base}\n    n_ctx: 4096\n"
        "limits:\n  max_tokens: 1024\n"
    )
    config.write_text(text)
    assert main(["pin", "--config", str(config), "--check"]) == 1
    assert config.read_text() == text  # --check writes nothing
    assert main(["pin", "--config", str(config)]) == 0
    written = config.read_text()
    loaded = yaml.safe_load(written)
    assert [(m["name"], m.get("sha256"), m.get("adapter_sha256")) for m in loaded["models"]] == [
        ("one", file_sha256(base), file_sha256(adapter)), ("two", file_sha256(base), None)]
    assert written.startswith("# a comment that stays\n") and "# stale" in written
    assert loaded["limits"] == {"max_tokens": 1024} and loaded["models"][1]["n_ctx"] == 4096
    assert main(["pin", "--config", str(config), "--check"]) == 0
    assert pin_text(written, {}) == written


def test_digests_are_computed_once_per_file_version(tmp_path):
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"GGUF" * 1000)
    digests = FileDigests()
    first = digests.sha256(path)
    assert first == file_sha256(path) and digests.sha256(path) == first and len(digests._cache) == 1
    path.write_bytes(b"FUGG" * 1000)
    os.utime(path, ns=(1, 1))  # a new version: another mtime
    assert digests.sha256(path) != first and len(digests._cache) == 2
    with pytest.raises(PinMismatch, match="not the pinned"):
        digests.check(path, first, "the GGUF")
    digests.check(path, None, "the GGUF")  # not pinned: not checked
