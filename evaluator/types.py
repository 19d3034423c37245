"""The records the evaluator passes around: items in, model outputs, judge verdicts, one result row out.

Plain dataclasses (not pydantic) because they are built in the hot loop and written with ``asdict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medgpt.prompts import mcq_target


@dataclass(frozen=True)
class MCQItem:
    id: str
    question: str
    options: dict[str, str]
    answer: str  # the correct option key
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def answer_text(self) -> str:
        return f"{self.answer}: {self.options[self.answer]}"


@dataclass(frozen=True)
class SummaryItem:
    id: str
    source: str
    text: str
    reference: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NoteQAItem:
    """A question about a clinical text: Asclepius-style instructions, or PubMedQA (``decision`` yes/no/maybe,
    ``reference`` the long answer)."""

    id: str
    source: str
    note: str
    question: str
    reference: str
    decision: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OpenItem:
    """An open medical question with no reference answer (MEDIQA consumer questions)."""

    id: str
    source: str
    question: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class MCQOutput:
    """A sampler's answer to one MCQ; ``error`` is set (and the rest empty) when the model call failed."""

    model: str
    raw_text: str = ""
    analysis: str = ""
    answer: str = ""
    choice: str | None = None
    #: The model's own text followed the format; None when the source cannot say (a gateway that does not
    #: report it).
    well_formed: bool | None = None
    rescued: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    error: str | None = None
    #: Of the model's own answer, before any rescue: "stop", "length", "repetition" (the loop guard cut it);
    #: None when the source does not report it.
    finish_reason: str | None = None
    #: "echo" when the core's echo guard refused the answer (the gateway's 502); the call then has ``error``.
    refused: str | None = None

    def served_text(self, options: Mapping[str, str]) -> str:
        """The answer as the gateway returns it (analysis + the chosen option of ``options``), in the tag
        format the model is trained to write (``medgpt.prompts.mcq_target``).

        This is what the judge grades: with constrained decoding the raw text can end inside the analysis
        (tokens ran out) while the rescue step still chose an option, and the user is served analysis +
        answer. Without a choice the raw text is all there is.
        """
        if self.choice not in options:
            return self.raw_text
        return mcq_target(self.analysis, self.choice, options)


@dataclass
class SummaryOutput:
    model: str
    summary: str = ""
    chunks: int = 1
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    error: str | None = None
    #: "stop", "length", "repetition" (the gateway's loop guard cut the answer); None when the source does not
    #: report it.
    finish_reason: str | None = None
    #: "echo" when the core's echo guard refused the answer (the gateway's 502); the call then has ``error``.
    refused: str | None = None


@dataclass
class TextOutput:
    """A free-text answer (note QA, open question); ``error`` is set (and ``text`` empty) when the call
    failed."""

    model: str
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    error: str | None = None
    finish_reason: str | None = None
    #: "echo" when the core's echo guard refused the answer (the gateway's 502); the call then has ``error``.
    refused: str | None = None


@dataclass(frozen=True)
class Verdict:
    """One judge's grade. ``score`` is None when the judge's reply could not be parsed or the call failed:
    unscored, never a made-up number."""

    judge: str
    score: float | None
    explanation: str
    raw: str | None = None
    error: str | None = None
