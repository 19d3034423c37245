"""ROUGE-1/2/L F1 of a summary against a reference (Google's ``rouge-score``, Porter stemming).

ROUGE rewards word overlap, not faithfulness: a model that copies the note scores well against a long
reference. That is why the summary eval reports it next to a judge's faithfulness score, never alone.
"""

from __future__ import annotations

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class Rouge:
    """Holds one ``RougeScorer`` (it builds a tokenizer and stemmer; cheap to reuse, wasteful to rebuild per
    row)."""

    def __init__(self, types: tuple[str, ...] = ROUGE_TYPES, stemmer: bool = True):
        from rouge_score import rouge_scorer

        self.types = types
        self._scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=stemmer)

    def score(self, reference: str, candidate: str) -> dict[str, float]:
        """F1 per ROUGE type; an empty candidate scores 0 (it said nothing), not None."""
        if not candidate.strip():
            return {t: 0.0 for t in self.types}
        scores = self._scorer.score(reference, candidate)
        return {t: round(scores[t].fmeasure, 6) for t in self.types}
