"""A quick held-out check of an exported model, per task: does it stop by itself, is the answer degenerate (empty,
looping, echoing the prompt, by :func:`medgpt.guards.degenerate`), and for MCQ rows does it write
``<analysis>…</analysis>`` then an ``<answer>X: …</answer>`` that names an option?

This is the cheap, honest signal a short CPU tune can move (accuracy needs far more training; the evaluator
measures it). It runs the GGUF through llama.cpp exactly as the gateway would: the prompt rendered in the model's
chat template (the prepared rows' prompts), tokenized by :func:`medgpt.engines.gguf.tokenize_prompt` (BOS where the
vocabulary asks for one, only the template's markers special), the template's stop strings, greedy decoding.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from medgpt.engines.gguf import tokenize_prompt
from medgpt.guards import degenerate
from medgpt.prompts import parse_mcq
from medgpt.templates import ChatTemplate, named


def load_llama(model: Path, adapter: Path | None = None, n_ctx: int = 1024, threads: int = 1):
    from llama_cpp import Llama

    kwargs: dict[str, Any] = {"n_ctx": n_ctx, "n_threads": threads, "verbose": False, "seed": 0}
    if adapter is not None:
        kwargs["lora_path"] = str(adapter)
    return Llama(model_path=str(model), **kwargs)


def format_compliance(
    model: Path,
    rows: list[dict[str, Any]],
    adapter: Path | None = None,
    max_tokens: int = 192,
    threads: int = 1,
    template: ChatTemplate | None = None,
    n_ctx: int = 1024,
) -> dict[str, Any]:
    """Greedy-generate on each prepared row (``prompt``, ``task``; MCQ rows also ``options``, ``answer``) and count,
    per task, answers that stopped by themselves and degenerate answers; for MCQ rows also well-formed and correct
    ones. ``template`` is the model's chat template the rows were rendered in (default: ``gemma``); ``n_ctx`` must
    hold the longest prompt plus ``max_tokens``."""
    template = template or named("gemma")
    llm = load_llama(model, adapter, n_ctx=n_ctx, threads=threads)
    per_task: dict[str, dict[str, int]] = {}
    tokens = 0
    started = time.perf_counter()
    samples = []
    try:
        for row in rows:
            ids = tokenize_prompt(llm, row["prompt"], template)
            out = llm.create_completion(ids, max_tokens=max_tokens, temperature=0.0, stop=list(template.stop))
            choice = out["choices"][0]
            counts = per_task.setdefault(row.get("task", "mcq"), {"prompts": 0, "stopped": 0, "degenerate": 0})
            counts["prompts"] += 1
            counts["stopped"] += choice["finish_reason"] == "stop"
            counts["degenerate"] += degenerate(choice["text"], row["prompt"]) is not None
            if "options" in row:
                parsed = parse_mcq(choice["text"], row["options"])
                counts["well_formed"] = counts.get("well_formed", 0) + parsed.well_formed
                counts["correct"] = counts.get("correct", 0) + (parsed.choice == row.get("answer"))
            tokens += out["usage"]["completion_tokens"]
            if len(samples) < 3:
                samples.append(choice["text"][:400])
    finally:
        llm.close()
    n = len(rows)
    total = {k: sum(c.get(k, 0) for c in per_task.values()) for k in ("stopped", "degenerate", "well_formed")}
    return {
        "prompts": n,
        **total,
        "per_task": per_task,
        "completion_tokens_mean": round(tokens / n, 1) if n else 0,
        "seconds": round(time.perf_counter() - started, 1),
        "samples": samples,
    }
