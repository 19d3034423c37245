"""``config/evaluator.yaml``, overridden by command-line flags. The models themselves (paths, adapters, prompt
format) come from the gateway's own settings (``config/medgpt.yaml``), so the evaluator cannot drift from what
is served."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "evaluator.yaml"


class JudgeConfig(BaseModel):
    kind: Literal["llamacpp", "ollama", "groq"]
    model: str
    name: str | None = None
    #: groq: the API base URL (None = Groq's cloud); ollama: the server's host URL.
    base_url: str | None = None
    api_key_env: str = "GROQ_API_KEY"
    max_tokens: int = 160
    #: groq judges: "object" (Groq's JSON mode), "schema" (JSON mode + the verdict schema: llama-cpp-python's
    #: server), "off" (no response_format; the reply is parsed leniently).
    json_mode: Literal["object", "schema", "off"] = "object"

    @classmethod
    def parse(cls, spec: str) -> JudgeConfig:
        """``kind:model[@base_url]``, e.g. ``llamacpp:gemma3-270m``, ``groq:llama-3.3-70b-versatile``,
        ``groq:judge@http://127.0.0.1:8081``, ``ollama:llama3.1:8b@http://127.0.0.1:11434``."""
        kind, _, rest = spec.partition(":")
        if not rest:
            raise ValueError(f"judge {spec!r}: expected kind:model[@base_url]")
        model, _, url = rest.partition("@")
        return cls(kind=kind, model=model, base_url=url or None)


class RetryConfig(BaseModel):
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0


class MCQConfig(BaseModel):
    max_tokens: int = 256
    #: Also answer unconstrained (no grammar, no rescue): needed for format compliance; doubles generation
    #: time.
    raw: bool = True


class SummaryConfig(BaseModel):
    max_tokens: int = 192
    style: Literal["brief", "bullets", "soap"] = "brief"


class WeaveConfig(BaseModel):
    #: "entity/project" or "project"; the run goes to Weave only when this is set AND WANDB_API_KEY is in the
    #: env.
    project: str | None = None
    #: Run the same weave.Evaluation without logging in (no network): what the tests use.
    offline_evaluation: bool = False


class EvalConfig(BaseModel):
    models: list[str] = Field(default_factory=lambda: ["gemma3-270m", "medgpt"])
    datasets: list[Path] = Field(default_factory=lambda: [Path("data/mcq/medqa_us_dev.jsonl")])
    limit: int | None = 50
    seed: int = 0
    temperature: float = 0.0
    out: Path = Path("results/eval")
    #: None: the engine of config/medgpt.yaml.
    engine: Literal["llamacpp", "ollama", "openai"] | None = None
    url: str | None = None
    concurrency: int = 1
    timeout: float = 300.0
    mcq: MCQConfig = MCQConfig()
    summary: SummaryConfig = SummaryConfig()
    judges: list[JudgeConfig] = Field(default_factory=list)
    judge_concurrency: int = 1
    judge_retries: RetryConfig = RetryConfig()
    weave: WeaveConfig = WeaveConfig()
    #: llama.cpp threads for the in-process engine; None keeps config/medgpt.yaml's value.
    n_threads: int | None = None

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else ROOT / path


def load_config(path: Path | None = None) -> EvalConfig:
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.exists():
        if path == DEFAULT_CONFIG:
            return EvalConfig()
        raise FileNotFoundError(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return EvalConfig.model_validate(data)
