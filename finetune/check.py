"""Format compliance of an exported model on held-out prompts: does it write ``<analysis>…</analysis>`` then a
``<answer>X: …</answer>`` that names an option, and stop?

This is the cheap, honest signal a short CPU tune can move (accuracy needs far more training; the evaluator
measures it). It runs the GGUF through llama.cpp exactly as the gateway would: the prompt rendered by
:mod:`medgpt.prompts`, BOS added by llama.cpp, ``<end_of_turn>`` as the stop string, greedy decoding.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from medgpt.prompts import STOP, parse_mcq


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
) -> dict[str, Any]:
    """Greedy-generate on each prepared row (``prompt``, ``options``, ``answer``) and count well-formed answers,
    answers that stopped by themselves, and correct choices."""
    llm = load_llama(model, adapter, threads=threads)
    well_formed = stopped = correct = tokens = 0
    started = time.perf_counter()
    samples = []
    try:
        for row in rows:
            out = llm.create_completion(
                row["prompt"], max_tokens=max_tokens, temperature=0.0, stop=list(STOP["gemma"])
            )
            choice = out["choices"][0]
            parsed = parse_mcq(choice["text"], row["options"])
            well_formed += parsed.well_formed
            stopped += choice["finish_reason"] == "stop"
            correct += parsed.choice == row.get("answer")
            tokens += out["usage"]["completion_tokens"]
            if len(samples) < 2:
                samples.append(choice["text"][:400])
    finally:
        llm.close()
    n = len(rows)
    return {
        "prompts": n,
        "well_formed": well_formed,
        "stopped": stopped,
        "correct": correct,
        "completion_tokens_mean": round(tokens / n, 1) if n else 0,
        "seconds": round(time.perf_counter() - started, 1),
        "samples": samples,
    }
