"""The evaluator's settings, read the way the gateway reads its own (pydantic-settings):
``config/evaluator.yaml``, then ``MEDGPT_EVAL_*`` environment variables (nested keys with ``__``, e.g.
``MEDGPT_EVAL_MCQ__RAW=false``), then command-line flags. The models themselves (paths, adapters, prompt
format) come from the gateway's own settings (``config/medgpt.yaml``), so the evaluator cannot drift from what
is served."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from medgpt.prompts import SummaryStyle
from medgpt.settings import EngineKind, YamlFileSettings, project_root


def default_config() -> Path:
    """``config/evaluator.yaml`` under the project root (``MEDGPT_HOME`` when set)."""
    return project_root() / "config" / "evaluator.yaml"


class _Strict(BaseModel):
    """A config section: an unknown key is a typo that must fail, not a setting silently left at its
    default."""

    model_config = ConfigDict(extra="forbid")


class JudgeConfig(_Strict):
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


class RetryConfig(_Strict):
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0


class MCQConfig(_Strict):
    max_tokens: int = 256
    #: Also answer unconstrained (no grammar, no rescue): needed for format compliance; doubles generation
    #: time.
    raw: bool = True


class SummaryConfig(_Strict):
    max_tokens: int = 192
    #: The style of a row whose ``source`` is not in ``styles`` (and whose dataset names none).
    style: SummaryStyle = "brief"
    #: Style by the row's ``source``: each reference set was written in one shape (MTS-Dialog: a few
    #: sentences of one section; ACI-Bench: a full note with sections), and ROUGE against a reference only
    #: means something when the summary is asked for in the same shape.
    styles: dict[str, SummaryStyle] = Field(
        default_factory=lambda: {"mts_dialog": "brief", "aci_bench": "soap"}
    )


class NoteQAConfig(_Strict):
    #: PubMedQA long answers average ~40 words, Asclepius-style answers ~20: 128 tokens leave room for both.
    max_tokens: int = 128


class OpenConfig(_Strict):
    max_tokens: int = 192


class DatasetConfig(_Strict):
    """One evaluation set and what is particular to it. A bare path in the YAML is a DatasetConfig with the
    defaults."""

    path: Path
    #: First N items; None = the run's ``limit``; 0 = all.
    limit: int | None = None
    #: Summaries only: one style for every row (None = by the row's source, ``summary.styles``).
    style: SummaryStyle | None = None
    #: None = the mode's ``max_tokens``.
    max_tokens: int | None = None
    #: Send this set's outputs to the configured judges (an explicit ``--judge`` judges every set).
    judge: bool = True

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, value):
        return {"path": value} if isinstance(value, (str, Path)) else value


class GatesConfig(_Strict):
    """The quality gates the shipped model is judged by (issue 7). Each gate names its dataset by file-name
    stem prefix (``mts_dialog_valid`` also matches ``mts_dialog_valid_20``) and the number of items a verdict
    needs: a run on fewer items still computes pass/fail, marked ``incomplete``."""

    #: Degenerate outputs (empty, looping, echoing) in every mode, pooled over the mode's datasets.
    degenerate_max: float = 0.02
    mcq_dataset: str = "medqa_us_dev"
    mcq_required_n: int = 300
    mcq_accuracy_min: float = 0.30
    #: No answer letter chosen for more than this share of the questions (position bias).
    mcq_max_letter_share: float = 0.35
    mcq_format_compliance_min: float = 1.0
    summary_dataset: str = "mts_dialog_valid"
    summary_required_n: int = 100
    summary_rouge_l_min: float = 0.25
    note_qa_dataset: str = "pubmedqa_dev"
    note_qa_required_n: int = 100
    decision_stated_min: float = 0.95
    #: Significance level of the paired tests a gate relies on ("above the base model").
    alpha: float = 0.05


class WeaveConfig(_Strict):
    #: "entity/project" or "project": the finished rows, de-identified, are logged to W&B Weave only when this
    #: is set AND WANDB_API_KEY is in the environment.
    project: str | None = None
    #: Weave's own error reports to Sentry (a network call whose stack traces may hold clinical text).
    error_reporting: bool = False


class EvalConfig(YamlFileSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="MEDGPT_EVAL_", env_nested_delimiter="__")

    #: The first model is the base every other model is compared with (paired tests, "above the base" gate).
    models: list[str] = Field(default_factory=lambda: ["gemma3-270m", "medgpt"])
    datasets: list[DatasetConfig] = Field(
        default_factory=lambda: [DatasetConfig(path=Path("data/mcq/medqa_us_dev.jsonl"))]
    )
    #: Items per dataset when the dataset names no limit of its own (None or 0 = all).
    limit: int | None = 50
    seed: int = 0
    temperature: float = 0.0
    out: Path = Path("results/eval")
    #: None: the engine of config/medgpt.yaml.
    engine: EngineKind | None = None
    url: str | None = None
    concurrency: int = 1
    timeout: float = 300.0
    #: Every mode's answer length, over the per-mode and per-dataset values (``--max-tokens``).
    max_tokens: int | None = None
    mcq: MCQConfig = MCQConfig()
    summary: SummaryConfig = SummaryConfig()
    note_qa: NoteQAConfig = NoteQAConfig()
    open: OpenConfig = OpenConfig()
    gates: GatesConfig = GatesConfig()
    judges: list[JudgeConfig] = Field(default_factory=list)
    #: The ``--judge`` arguments a run was given (None: the judges are the config file's); the reproduce
    #: command of each report row repeats them.
    judge_flags: list[str] | None = None
    judge_concurrency: int = 1
    judge_retries: RetryConfig = RetryConfig()
    weave: WeaveConfig = WeaveConfig()
    #: W&B's credential, from the environment only (W&B's client reads it there too); never written anywhere.
    wandb_api_key: SecretStr | None = Field(None, validation_alias="WANDB_API_KEY", exclude=True, repr=False)
    #: llama.cpp threads for the in-process engine; None keeps config/medgpt.yaml's value.
    n_threads: int | None = None

    def resolve(self, path: Path) -> Path:
        path = Path(path)
        return path if path.is_absolute() else project_root() / path

    def limit_for(self, ds: DatasetConfig) -> int | None:
        """Items to evaluate from ``ds``: its own limit, else the run's; None means all."""
        limit = ds.limit if ds.limit is not None else self.limit
        return limit or None

    def max_tokens_for(self, kind: str, ds: DatasetConfig) -> int:
        if self.max_tokens:
            return self.max_tokens
        if ds.max_tokens:
            return ds.max_tokens
        return {"mcq": self.mcq, "summary": self.summary, "note_qa": self.note_qa, "open": self.open}[
            kind
        ].max_tokens

    def dataset(self, path: Path) -> DatasetConfig:
        """The configured entry for ``path`` (so ``--dataset`` keeps that set's style, length and judge
        settings), or a plain entry for a set the config does not list."""
        target = self.resolve(path).resolve()
        for ds in self.datasets:
            if self.resolve(ds.path).resolve() == target:
                return ds.model_copy(update={"path": Path(path)})
        return DatasetConfig(path=Path(path))
