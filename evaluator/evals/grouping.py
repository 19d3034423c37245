"""Rows grouped per model, shared by every eval's ``summarize`` so that all of them skip a model with no rows
the same way and read its scores in the same row order."""

from __future__ import annotations

from collections.abc import Iterator


def rows_per_model(rows: list[dict], models: list[str]) -> Iterator[tuple[str, list[dict], list[dict]]]:
    """Yield ``(model, its rows, their scores)`` in ``models`` order, leaving out models with no rows."""
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        if mine:
            yield model, mine, [r["scores"] for r in mine]
