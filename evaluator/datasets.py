"""Loading evaluation sets from JSONL, and telling MCQ sets from summary sets by their fields.

MCQ rows: ``id, question, options{A..}, answer_idx`` (the MedQA layout in data/mcq). Summary rows: ``id, text,
reference`` (the layout written for data/summarization/*_N.jsonl; see data/SOURCES.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from evaluator.types import MCQItem, SummaryItem

Kind = Literal["mcq", "summary"]


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not JSON: {exc}") from exc
    return rows


def kind_of(row: dict) -> Kind:
    if "question" in row and "options" in row:
        return "mcq"
    if "text" in row and "reference" in row:
        return "summary"
    raise ValueError(
        f"cannot tell the eval from the fields {sorted(row)}: need question+options or text+reference"
    )


def mcq_item(row: dict) -> MCQItem:
    options = {str(k): str(v) for k, v in row["options"].items()}
    answer = str(row.get("answer_idx") or row.get("answer"))
    if answer not in options:
        raise ValueError(f"item {row.get('id')}: answer {answer!r} is not an option key {list(options)}")
    meta = {k: v for k, v in row.items() if k not in {"id", "question", "options", "answer_idx", "answer"}}
    return MCQItem(id=str(row["id"]), question=row["question"], options=options, answer=answer, meta=meta)


def summary_item(row: dict) -> SummaryItem:
    return SummaryItem(
        id=str(row["id"]),
        source=str(row.get("source", "")),
        text=row["text"],
        reference=row["reference"],
        meta=row.get("meta", {}),
    )


def load(path: Path, limit: int | None = None) -> tuple[Kind, list[MCQItem] | list[SummaryItem]]:
    """The first ``limit`` items of ``path`` (file order, so two runs with the same limit score the same
    items)."""
    rows = read_jsonl(Path(path))
    if not rows:
        raise ValueError(f"{path} has no rows")
    kind = kind_of(rows[0])
    rows = rows[:limit] if limit else rows
    items = [mcq_item(r) for r in rows] if kind == "mcq" else [summary_item(r) for r in rows]
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: item ids are not unique")
    return kind, items
