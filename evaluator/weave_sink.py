"""W&B Weave as a sink for a finished run: every evaluation runs once, locally, and the rows the local report
is written from are then logged to Weave, de-identified, as one Weave evaluation per (dataset, model) with
``weave.EvaluationLogger``. The local report and the Weave record therefore hold the same rows and figures.

What reaches W&B: each row's item fields (question, options, note, text, reference) as the prediction's
inputs, the model's output and the judges' verdicts as its output, all through
:func:`evaluator.deid.scrub_text`; its numeric and yes/no scores; and the figures of the (dataset, model)
summary. Weave's hooks scrub every logged input and output once more. Weave's implicit patching of LLM clients
(openai, groq, ...) is off, so no judge or engine call is traced with the text it sent; Weave's own error
reports to Sentry are off unless configured.

Weave is imported only here, and only when a run has a project and ``WANDB_API_KEY``
(:func:`evaluator.runner.weave_mode`): without both, nothing imports weave and no network is used.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from evaluator.deid import scrub_text

log = logging.getLogger(__name__)

#: Row fields that are what the model produced or what was said of it; the other fields (but ``scores``)
#: describe the item and become the prediction's inputs.
OUTPUT_FIELDS = ("output", "raw_output", "served_text", "judges")

#: ``weave.init`` settings. ``implicitly_patch_integrations`` off: Weave would otherwise trace every openai /
#: groq client call (a remote judge's prompt holds the item's text) by itself, outside the de-identified
#: rows.
WEAVE_SETTINGS = {
    "implicitly_patch_integrations": False,
    # a one-shot upload gains nothing from a disk cache of server answers
    "use_server_cache": False,
    "capture_code": False,
    "print_call_link": False,
}


def scrub_deep(value: Any) -> Any:
    """Every string inside ``value`` (dicts, lists, tuples) de-identified; other values unchanged."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: scrub_deep(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_deep(v) for v in value]
    return value


def weave_inputs(row: dict) -> dict:
    """The item a row is about, de-identified."""
    return scrub_deep({k: v for k, v in row.items() if k not in OUTPUT_FIELDS and k != "scores"})


def weave_output(row: dict) -> dict:
    """What the model answered and what the judges said of it, de-identified."""
    return scrub_deep({k: row[k] for k in OUTPUT_FIELDS if k in row})


def weave_scores(row: dict) -> dict:
    """The row's numeric and yes/no scores (no text: labels such as a degenerate kind stay in the report)."""
    return {k: v for k, v in row["scores"].items() if v is None or isinstance(v, (bool, int, float))}


def _figures(value: Any) -> Any:
    """A summary block with its text values left out (it holds counts, rates and intervals)."""
    if isinstance(value, dict):
        kept = {str(k): _figures(v) for k, v in value.items() if not isinstance(v, str)}
        return {k: v for k, v in kept.items() if v != {}}
    if isinstance(value, (list, tuple)):
        return [_figures(v) for v in value if not isinstance(v, str)]
    return value


class WeaveSink:
    """Logs the rows of a finished run to a Weave project. Nothing happens until :meth:`log`."""

    def __init__(self, project: str, *, error_reporting: bool = False):
        self.project = project
        self.error_reporting = error_reporting

    @contextmanager
    def session(self) -> Iterator:
        """The ``weave`` module, initialised for the project; finished on exit (uploads flushed, Weave's hooks
        removed), so nothing after the run is traced."""
        import weave
        from weave.telemetry import trace_sentry

        # Weave reads WANDB_ERROR_REPORTING once, at import; an explicit "false" there still wins.
        if not self.error_reporting:
            trace_sentry.global_trace_sentry._disabled = True
        weave.init(
            self.project,
            settings=WEAVE_SETTINGS,
            postprocess_inputs=scrub_deep,
            postprocess_output=scrub_deep,
        )
        try:
            yield weave
        finally:
            _flush_spans()
            weave.finish()

    def log(self, rows: list[dict], per_dataset: dict) -> dict[str, str | None]:
        """One Weave evaluation per (dataset, model) of ``rows`` (each with its ``dataset``), summarized by
        that model's block of ``per_dataset`` (``summary.json``'s ``datasets``). Returns each evaluation's
        URL."""
        urls: dict[str, str | None] = {}
        with self.session() as weave:
            for dataset, model, mine in _groups(rows):
                stem = Path(dataset).stem
                logger = weave.EvaluationLogger(
                    name=f"medgpt-{mine[0]['eval']}-{stem}",
                    model=model.replace(":", "-"),
                    dataset=stem,
                    eval_attributes={"dataset": dataset, "model": model, "items": len(mine)},
                )
                for row in mine:
                    logger.log_example(weave_inputs(row), weave_output(row), weave_scores(row))
                block = per_dataset.get(dataset, {}).get("models", {}).get(model, {})
                logger.log_summary(_figures(block))
                urls[f"{stem} · {model}"] = logger.ui_url
        return urls


def _flush_spans() -> None:
    """Weave also exports OpenTelemetry spans of its evaluations through a global tracer provider; sent now,
    while the run is still being logged, rather than at interpreter exit."""
    try:
        from opentelemetry import trace
    except ImportError:  # weave then exports no spans either
        return

    provider = trace.get_tracer_provider()
    if hasattr(provider, "force_flush"):
        provider.force_flush()


def _groups(rows: list[dict]) -> Iterable[tuple[str, str, list[dict]]]:
    """(dataset, model, rows) in the order the rows came."""
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        ds_rows = [r for r in rows if r["dataset"] == dataset]
        for model in dict.fromkeys(r["model"] for r in ds_rows):
            yield dataset, model, [r for r in ds_rows if r["model"] == model]
