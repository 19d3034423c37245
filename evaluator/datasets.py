"""Loading evaluation sets from JSONL, and telling the four modes apart by their fields.

- MCQ: ``id, question, options{A..}, answer_idx`` (the MedQA layout in data/mcq).
- note QA: ``id, source, note, question, reference[, decision]`` (Asclepius-style instructions; PubMedQA with
  its yes/no/maybe ``decision`` and the long answer as ``reference``).
- summary: ``id, source, text, reference, meta`` (MTS-Dialog, ACI-Bench, MTSamples descriptions).
- open: ``id, source, question, meta`` with neither ``options`` nor ``note`` (MEDIQA questions, no reference).

The order of the checks matters: an MCQ and a note-QA row both have a ``question``, and only the open row has
nothing else that identifies it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from evaluator.types import MCQItem, NoteQAItem, OpenItem, SummaryItem

Kind = Literal["mcq", "summary", "note_qa", "open"]
KINDS: tuple[Kind, ...] = ("mcq", "summary", "note_qa", "open")


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
    if "note" in row and "question" in row:
        return "note_qa"
    if "text" in row and "reference" in row:
        return "summary"
    if "question" in row:
        return "open"
    raise ValueError(
        f"cannot tell the eval from the fields {sorted(row)}: need question+options (MCQ), note+question "
        "(note QA), text+reference (summary) or question (open)"
    )


def kind_of_file(path: Path) -> Kind:
    """The mode of a JSONL set, from its first row (without reading the whole file)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                return kind_of(json.loads(line))
    raise ValueError(f"{path} has no rows")


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


def note_qa_item(row: dict) -> NoteQAItem:
    decision = row.get("decision")
    if decision is not None and str(decision).lower() not in {"yes", "no", "maybe"}:
        raise ValueError(f"item {row.get('id')}: decision {decision!r} is not yes/no/maybe")
    known = {"id", "source", "note", "question", "reference", "decision", "meta"}
    meta = {**row.get("meta", {}), **{k: v for k, v in row.items() if k not in known}}
    return NoteQAItem(
        id=str(row["id"]),
        source=str(row.get("source", "")),
        note=row["note"],
        question=row["question"],
        reference=str(row.get("reference", "")),
        decision=str(decision).lower() if decision is not None else None,
        meta=meta,
    )


def open_item(row: dict) -> OpenItem:
    return OpenItem(
        id=str(row["id"]),
        source=str(row.get("source", "")),
        question=row["question"],
        meta=row.get("meta", {}),
    )


_ITEM = {"mcq": mcq_item, "summary": summary_item, "note_qa": note_qa_item, "open": open_item}


def load(path: Path, limit: int | None = None) -> tuple[Kind, list]:
    """The first ``limit`` items of ``path`` (file order, so two runs with the same limit score the same
    items)."""
    rows = read_jsonl(Path(path))
    if not rows:
        raise ValueError(f"{path} has no rows")
    kind = kind_of(rows[0])
    rows = rows[:limit] if limit else rows
    items = [_ITEM[kind](r) for r in rows]
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: item ids are not unique")
    return kind, items
