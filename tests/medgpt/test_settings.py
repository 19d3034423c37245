"""Settings: YAML, then environment (nested with __), paths resolved against the project root."""

from medgpt.settings import ROOT, Settings


def test_yaml_defaults():
    s = Settings()
    assert s.engine == "llamacpp" and s.default_model == "medgpt"
    assert {m.name for m in s.models} >= {"medgpt", "gemma3-270m"}
    assert s.model("medgpt").path == ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
    assert s.log_text is False  # clinical text stays out of logs unless asked for


def test_environment_overrides_yaml(monkeypatch):
    monkeypatch.setenv("MEDGPT_ENGINE", "ollama")
    monkeypatch.setenv("MEDGPT_LLAMACPP__N_THREADS", "1")
    monkeypatch.setenv("MEDGPT_OLLAMA__HOST", "http://ollama:11434")
    s = Settings()
    assert (s.engine, s.llamacpp.n_threads, s.ollama.host) == ("ollama", 1, "http://ollama:11434")
