"""Rebuild the multi-task files in data/ from the read-only shared data set (run once by a maintainer; the project
never reads ../shared at run time).

    python data/make_splits.py ../shared/data

What it writes, and why:
- Training sources copied as they are: MTS-Dialog train, ACI-Bench train, MeQSum train, MTSamples (500).
- PubMedQA PQA-L (500 rows outside the official test split) is split by a hash of the PMID into 400 training and
  100 development rows: the development rows are what the evaluator's note-QA decision accuracy is measured on, so
  they must never be trained on.
- The Asclepius-style note instructions (1,048 instructions over 105 MTSamples notes) are split by *note*, not by
  instruction: 10 notes (and every instruction about them) are development only, so no dev answer was trained on
  a note the model has already seen with other instructions.
- Evaluation files in the evaluator's row shapes (summary: ``id, source, text, reference``; note QA: ``id, source,
  note, question, reference[, decision]``): MTS-Dialog validation (100), ACI-Bench validation (20), PubMedQA dev
  (100), note-instruction dev; open questions (``id, source, question``): MEDIQA 2021 validation summaries (50).
The split is a pure function of the row ids (sha256), so re-running it writes the same files.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{path.relative_to(OUT)}: {len(rows)} rows")


def _h(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def main(shared: Path) -> None:
    for name in ("summarization/mts_dialog_train", "summarization/aci_bench_train", "summarization/meqsum_train",
                 "notes/mtsamples_500"):  # fmt: skip
        _write(OUT / f"{name}.jsonl", _rows(shared / f"{name}.jsonl"))

    pubmed = sorted(_rows(shared / "pubmedqa/pubmedqa_trainval.jsonl"), key=lambda r: _h(str(r["pubid"])))
    dev_ids = {r["pubid"] for r in pubmed[:100]}
    _write(OUT / "pubmedqa/pubmedqa_train.jsonl", [r for r in pubmed if r["pubid"] not in dev_ids])
    _write(
        OUT / "pubmedqa/pubmedqa_dev.jsonl",
        [
            {
                "id": f"pubmedqa_{r['pubid']}",
                "source": "pubmedqa",
                "note": "\n".join(r["contexts"]),
                "question": r["question"],
                "reference": r["long_answer"],
                "decision": r["final_decision"],
            }
            for r in pubmed
            if r["pubid"] in dev_ids
        ],
    )

    instructions = _rows(shared / "notes/note_instructions_mtsamples.jsonl")
    notes = sorted({r["note"] for r in instructions}, key=_h)
    dev_notes = set(notes[:10])
    _write(OUT / "notes/note_instructions_train.jsonl", [r for r in instructions if r["note"] not in dev_notes])
    _write(
        OUT / "notes/note_instructions_dev.jsonl",
        [
            {
                "id": f"note_instr_{r['id']}",
                "source": "note_instructions",
                "note": r["note"],
                "question": r["instruction"],
                "reference": r["answer_gpt35"],
                "task": r["task"],
            }
            for r in instructions
            if r["note"] in dev_notes
        ],
    )

    _write(
        OUT / "summarization/mts_dialog_valid.jsonl",
        [
            {"id": f"mts_dialog_valid_{r['id']}", "source": "mts_dialog", "text": r["dialogue"],
             "reference": r["section_text"], "meta": {"section_header": r["section_header"]}}  # fmt: skip
            for r in _rows(shared / "summarization/mts_dialog_valid.jsonl")
        ],
    )
    # Open questions: the expert-written short questions of MEDIQA 2021 (validation) stand alone as consumer
    # medical questions; there is no reference answer, so this set measures degenerate output and the judge.
    _write(
        OUT / "open/mediqa_questions_dev.jsonl",
        [
            {"id": f"mediqa_{r['q_id']}", "source": "mediqa2021", "question": r["summary"],
             "meta": {"question_type": r.get("question_type"), "focus": r.get("question_focus")}}  # fmt: skip
            for r in _rows(shared / "summarization/mediqa2021_qs_valid.jsonl")
        ],
    )
    _write(
        OUT / "summarization/aci_bench_valid.jsonl",
        [
            {"id": f"aci_{r['encounter_id']}", "source": "aci_bench", "text": r["dialogue"], "reference": r["note"],
             "meta": {"dataset": r["dataset"]}}  # fmt: skip
            for r in _rows(shared / "summarization/aci_bench_valid.jsonl")
        ],
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
