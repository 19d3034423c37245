"""Degenerate outputs per item and per model: empty, looping or echoing the prompt.

The rule itself is ``medgpt.guards.degenerate`` (shared with the gateway's guards, so the evaluator counts
exactly what the gateway would stop). This module only supplies, per mode, the two texts the echo check
compares against: the user's input, and the instruction, which is the prompt built from ``medgpt.prompts``
with the input left empty (a real answer never repeats the instruction; it may quote the input).

The core's guards act while the model writes, so the served text alone would hide what they caught:
- an answer the loop guard cut (``finish_reason="repetition"``) is a **loop**: the model's own text met the
  loop rule (the guard fires exactly where ``medgpt.guards.loop_start`` would), the user gets a truncated
  answer;
- an answer the echo guard refused after its retry (``EchoedPrompt``, the gateway's 502) is an **echo**;
- an echo the retry repaired is not degenerate: the user got a real answer.

Any other failed model call has no output: it is unknown (None), counted under ``unknown`` and in the eval's
``errors``, never as a real or degenerate answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from evaluator.scorers.exact import proportion
from medgpt import prompts
from medgpt.guards import degenerate

KINDS = ("empty", "loop", "echo")


def _content(messages: list[prompts.Message]) -> str:
    return "\n".join(m["content"] for m in messages)


@cache
def mcq_instruction() -> str:
    return prompts.mcq_user_content("", {})


@cache
def summary_instruction(style: str) -> str:
    return _content(prompts.summarize_messages("", style))


@cache
def note_qa_instruction() -> str:
    return _content(prompts.note_qa_messages("", ""))


@cache
def open_instruction() -> str:
    return _content(prompts.open_question_messages(""))


def check(
    output: str | None,
    prompt_input: str,
    instruction: str,
    *,
    finish_reason: str | None = None,
    refused: str | None = None,
) -> dict:
    """``{"degenerate": bool | None, "degenerate_kind": "empty" | "loop" | "echo" | None}`` for one output;
    ``output=None`` (the call failed) is unknown unless the core ``refused`` it as degenerate."""
    if refused:
        return {"degenerate": True, "degenerate_kind": refused}
    if output is None:
        return {"degenerate": None, "degenerate_kind": None}
    kind = degenerate(output, prompt_input, instruction)
    if kind is None and finish_reason == "repetition":
        kind = "loop"
    return {"degenerate": kind is not None, "degenerate_kind": kind}


def of(record, text: str, prompt_input: str, instruction: str) -> dict:
    """:func:`check` for a sampler's output record (its ``error``, ``finish_reason`` and ``refused``) whose
    answer text is ``text``."""
    return check(
        None if record.error is not None else text,
        prompt_input,
        instruction,
        finish_reason=getattr(record, "finish_reason", None),
        refused=getattr(record, "refused", None),
    )


def summarize(scores: Sequence[dict]) -> dict:
    """Rate of degenerate outputs (Wilson 95% over the known ones), how many, and how many of each kind."""
    flags = [s.get("degenerate") for s in scores]
    rate = proportion(flags)
    return {
        **rate.as_dict(),
        "count": sum(1 for f in flags if f),
        "counts": {k: sum(1 for s in scores if s.get("degenerate_kind") == k) for k in KINDS},
        "unknown": sum(1 for f in flags if f is None),
    }
