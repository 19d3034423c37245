"""Fixtures for the fine-tuning tests: small MCQ files written per test, the project's real data and base GGUF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT  # noqa: F401  (the finetune tests import it from here)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def mcq_row(i: int, question: str, explanation: str | None = None, answer: str = "B") -> dict:
    return {
        "id": f"q{i}",
        "question": question,
        "options": {"A": f"alpha {i}", "B": f"beta {i}", "C": f"gamma {i}", "D": f"delta {i}"},
        "answer_idx": answer,
        "explanation": explanation,
    }


@pytest.fixture
def eval_question() -> str:
    return (
        "A 45-year-old man presents with crushing chest pain radiating to the left arm for two hours. "
        "An ECG shows ST elevation in leads II, III and aVF. Which artery is most likely occluded?"
    )
