"""Questions about a clinical text (``/ask`` with ``context``): PubMedQA and Asclepius-style instructions.

- PubMedQA rows carry a gold ``decision`` (yes/no/maybe) and the long answer as ``reference``. The served
  answer format is "Yes. <long answer>", so the decision is read with ``medgpt.prompts.parse_decision`` (the
  parser the prompt was written for) and ROUGE-L is scored on the long answer, the text after a leading
  decision word. Decision accuracy is compared with the majority-class rate of the same items: a model that
  always says "yes" scores exactly that, so only accuracy above it shows the model read the abstract.
- Asclepius-style rows (no decision): ROUGE-L against the reference answer.
- Every row: degenerate outputs (empty, looping, echoing the note or the instruction).

Models are compared with McNemar's exact test on decision correctness and degenerate flags, and the Wilcoxon
signed-rank test on ROUGE-L per item. No judge: the references make the exact scores the measure here.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict

from evaluator.evals.grouping import rows_per_model
from evaluator.paired import compare
from evaluator.samplers import Sampler
from evaluator.scorers import degenerate, exact
from evaluator.scorers.rouge import Rouge
from evaluator.stats import binomial_above, bootstrap_mean, wilson_interval
from evaluator.types import NoteQAItem, TextOutput, Verdict
from medgpt.prompts import parse_decision

#: A decision word at the very start of the answer and the punctuation after it ("Yes. ", "no, ").
_LEADING_DECISION = re.compile(r"^\W*(?:yes|no|maybe)\b\W*", re.IGNORECASE)


def long_answer(text: str) -> str:
    """The answer without its leading decision word: what the PubMedQA long-answer reference is."""
    return _LEADING_DECISION.sub("", text, count=1)


class NoteQAEval:
    kind = "note_qa"

    def __init__(self, judges=None, *, seed: int = 0, max_tokens: int | None = None):
        # ``judges`` is accepted for the common eval signature; no rubric grades note answers.
        self.seed = seed
        self.max_tokens = max_tokens
        self.rouge = Rouge(("rougeL",))

    async def generate(self, sampler: Sampler, item: NoteQAItem) -> dict[str, TextOutput]:
        return {"served": await sampler.answer_note(item, max_tokens=self.max_tokens)}

    def exact_scores(self, item: NoteQAItem, outputs: dict[str, TextOutput]) -> dict:
        out = outputs["served"]
        text = out.text if out.error is None else ""
        answer = long_answer(text) if item.decision else text
        scores: dict = {
            "rougeL": self.rouge.score(item.reference, answer)["rougeL"],
            "decision": None,
            "decision_stated": None,
            "decision_correct": None,
        }
        if item.decision is not None:
            decision = parse_decision(text) if text else None
            scores.update(
                decision=decision,
                decision_stated=decision is not None,
                decision_correct=decision == item.decision,
            )
        return {
            **scores,
            "error": out.error is not None,
            **degenerate.of(out, out.text, f"{item.note}\n{item.question}", degenerate.note_qa_instruction()),
            "latency_s": round(out.seconds, 4),
            "tokens_per_s": exact.tokens_per_second(out.completion_tokens, out.seconds),
        }

    async def judge(self, item: NoteQAItem, outputs: dict[str, TextOutput]) -> list[Verdict]:
        return []

    def row(self, item: NoteQAItem, model: str, outputs: dict, scores: dict, verdicts: list[Verdict]) -> dict:
        return {
            "eval": self.kind,
            "item_id": item.id,
            "model": model,
            "source": item.source,
            "note": item.note,
            "question": item.question,
            "reference": {"answer": item.reference, "decision": item.decision},
            "output": asdict(outputs["served"]),
            "raw_output": None,
            "scores": {**scores, "judge": None},
            "judges": [],
        }

    def summarize(self, rows: list[dict], models: list[str]) -> dict:
        with_decision = any(r["reference"].get("decision") for r in rows)
        per_model = {}
        for model, mine, s in rows_per_model(rows, models):
            entry = {
                "n": len(mine),
                "rougeL": bootstrap_mean([x["rougeL"] for x in s], seed=self.seed).as_dict(),
                "degenerate": degenerate.summarize(s),
                "errors": sum(1 for x in s if x["error"]),
                "finish_reasons": dict(Counter(str(r["output"].get("finish_reason")) for r in mine)),
                "latency": exact.latency_summary(
                    [r["output"]["seconds"] for r in mine], [r["output"]["completion_tokens"] for r in mine]
                ),
            }
            if with_decision:
                gold = [r["reference"]["decision"] for r in mine if r["reference"].get("decision")]
                label, count = Counter(gold).most_common(1)[0]
                decided = [x for x in s if x["decision_correct"] is not None]  # the rows with a gold decision
                correct, known = sum(1 for x in decided if x["decision_correct"]), len(decided)
                entry.update(
                    decision_accuracy=wilson_interval(correct, known).as_dict(),
                    decision_stated=exact.proportion([x["decision_stated"] for x in s]).as_dict(),
                    # The rate of always answering the most frequent gold decision, from these items.
                    majority_class={"decision": label, "rate": count / len(gold)},
                    accuracy_above_majority_p=binomial_above(correct, known, count / len(gold)),
                    decisions=dict(Counter(x["decision"] or "none" for x in decided)),
                    gold_decisions=dict(Counter(gold)),
                )
            per_model[model] = entry
        return {
            "eval": self.kind,
            "main_metric": "decision_accuracy" if with_decision else "rougeL",
            "models": per_model,
            "comparisons": compare(
                rows,
                models,
                binary={"decision_accuracy": "decision_correct", "degenerate": "degenerate"},
                scores={"rougeL": "rougeL"},
                seed=self.seed,
            ),
        }
