"""HTTP request and response bodies. The examples are real inputs: Swagger's "Try it out" runs them as they are."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from medgpt.prompts import AskMode, SummaryStyle

MCQ_EXAMPLE = {
    "question": (
        "A 23-year-old woman presents with fever, dysuria and right flank pain for two days. Temperature is "
        "39.2 C and there is right costovertebral angle tenderness. Urinalysis shows white cell casts. "
        "What is the most likely diagnosis?"
    ),
    "options": {
        "A": "Acute cystitis",
        "B": "Acute pyelonephritis",
        "C": "Nephrolithiasis",
        "D": "Acute glomerulonephritis",
        "E": "Renal cell carcinoma",
    },
    "max_tokens": 256,
}
NOTE_QA_EXAMPLE = {
    "question": "Which medication was started and at what dose?",
    "context": (
        "HISTORY: 58-year-old man with type 2 diabetes, HbA1c 8.9%, on metformin 1000 mg twice daily. "
        "ASSESSMENT: Poorly controlled type 2 diabetes. PLAN: Start empagliflozin 10 mg once daily, continue "
        "metformin, recheck HbA1c in 3 months."
    ),
    "max_tokens": 64,
}
OPEN_EXAMPLE = {"question": "What are the first-line treatments for community-acquired pneumonia?", "max_tokens": 96}
SUMMARY_EXAMPLE = {
    "text": (
        "CHIEF COMPLAINT: Chest pain.\nHISTORY OF PRESENT ILLNESS: A 64-year-old man with hypertension and "
        "hyperlipidemia presents with 2 hours of substernal pressure radiating to the left arm with diaphoresis. "
        "ECG shows ST elevation in leads II, III and aVF. Troponin I is 2.3 ng/mL.\nASSESSMENT: Acute inferior "
        "ST-elevation myocardial infarction.\nPLAN: Aspirin 325 mg, ticagrelor 180 mg loading dose, heparin, "
        "emergent cardiac catheterization."
    ),
    "style": "brief",
    "max_tokens": 128,
}


def _json_integer(value: Any) -> Any:
    """JSON Schema's integer: a number without a fractional part (``5`` and ``5.0``), never ``true`` or ``"5"``
    (the models are strict, and a strict int alone would refuse ``5.0``, which the schema allows)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def json_int(ge: int | None = None, le: int | None = None) -> Any:
    """An integer field as JSON Schema means it, within ``[ge, le]`` (the bounds before the validator: so they
    reach the schema as ``minimum``/``maximum``)."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_json_integer)]

#: Stated in the schema for texts the server refuses when blank (the validators say why in words).
NOT_BLANK = {"pattern": "\\S"}


class Generation(BaseModel):
    """Options every generating route takes."""

    # strict: JSON types as the schema states them (no true/false as a seed, no "12" as max_tokens).
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(None, description="Model name from GET /models; the default model when omitted.")
    stream: bool = Field(False, description="Server-Sent Events: `token` events, then one `result` event.")
    max_tokens: json_int(1, 4096) | None = Field(None, description="Upper bound on generated tokens.")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    seed: json_int(0, 2**31 - 1) | None = None


class AskRequest(Generation):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [MCQ_EXAMPLE, NOTE_QA_EXAMPLE, OPEN_EXAMPLE]},
    )

    question: str = Field(
        ..., min_length=1, json_schema_extra=NOT_BLANK, description="The question, or the case vignette of an MCQ."
    )
    options: dict[str, str] | None = Field(
        None,
        description="Multiple-choice options keyed by capital letter (2-10, A-J). Makes the request an MCQ.",
        json_schema_extra={
            "propertyNames": {"pattern": "^[A-J]$"},
            "minProperties": 2,
            "maxProperties": 10,
            "additionalProperties": {"type": "string", "minLength": 1, **NOT_BLANK},
        },
    )
    context: str | None = Field(
        None, min_length=1, description="A clinical note or transcription the question is about (note QA)."
    )

    @field_validator("question")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question is blank")
        return v

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        if not 2 <= len(v) <= 10:
            raise ValueError(f"give between 2 and 10 options, got {len(v)}")
        out: dict[str, str] = {}
        for k, text in v.items():
            # Exactly as the schema says (no lower case, no spaces): "a" and "A" would otherwise be one option twice.
            if len(k) != 1 or k not in "ABCDEFGHIJ":
                raise ValueError(f"option keys must be single capital letters A-J, got {k!r}")
            if not text.strip():
                raise ValueError(f"option {k} is blank")
            out[k] = text.strip()
        return out

    @property
    def mode(self) -> AskMode:
        if self.options:
            return "mcq"
        return "note_qa" if self.context else "open"


class SummarizeRequest(Generation):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [SUMMARY_EXAMPLE]})

    text: str = Field(..., min_length=1, json_schema_extra=NOT_BLANK, description="Clinical note or transcription.")
    style: SummaryStyle = "brief"
    max_words: json_int(5, 2000) | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is blank")
        return v


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class Timings(BaseModel):
    total_ms: float
    tokens_per_second: float = Field(..., description="Generated tokens per second of the whole request.")


def usage_and_timings(result) -> dict:
    """The ``usage`` and ``timings`` fields of a response, from any task result."""
    usage, seconds = result.usage, result.seconds
    return {
        "usage": Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens),
        "timings": Timings(
            total_ms=round(seconds * 1000, 1),
            tokens_per_second=round(usage.completion_tokens / seconds, 2) if seconds else 0.0,
        ),
    }


FINISH_REASON = Field(
    None,
    description="Why generation ended: `stop` (the model finished), `length` (max_tokens reached), `repetition` "
    "(the loop guard stopped a repeating answer; the repeated part is trimmed).",
)


class EvidenceSpan(BaseModel):
    """A sentence of the note that supports the answer, verbatim: ``note[start:end] == text``."""

    text: str
    start: int = Field(..., ge=0, description="Character offset of the span in the note (0-based).")
    end: int = Field(..., ge=0, description="Character offset just past the span.")
    score: float = Field(..., description="Retrieval score (higher is more relevant).")


class AskResponse(BaseModel):
    model: str
    mode: AskMode
    answer: str
    analysis: str | None = None
    choice: str | None = Field(None, description="MCQ only: always one of the option keys.")
    rescued: bool | None = Field(
        None, description="MCQ only: the model's own answer named no option and a forced-choice step chose it."
    )
    evidence: list[EvidenceSpan] | None = Field(
        None,
        description="note_qa only: the note's sentences that support the answer, verbatim with offsets; empty when "
        "no sentence of the note does.",
    )
    finish_reason: str | None = FINISH_REASON
    usage: Usage
    timings: Timings


class SummarizeResponse(BaseModel):
    model: str
    summary: str
    style: str
    chunks: int = Field(..., description="Parts the text was split into to fit the context (1 = not split).")
    finish_reason: str | None = FINISH_REASON
    usage: Usage
    timings: Timings


class ModelCard(BaseModel):
    name: str
    engine: str
    quantization: str | None
    size_bytes: int | None
    loaded: bool
    context_length: int | None
    default: bool
    description: str = ""
    template: str | None = Field(
        None,
        description="The chat template the model's prompts are written in: `gguf` (the GGUF's own "
        "`tokenizer.chat_template`), a named format (`gemma`, `chatml`, `llama3`, `llama2`, `mistral`, `phi3`), "
        "`server` (a remote server applies the model's own), or null when it cannot be used (see the error on use).",
    )


class ModelList(BaseModel):
    models: list[ModelCard]


class ErrorBody(BaseModel):
    detail: str
