"""De-identification figures: recall per Safe Harbor kind on the synthetic corpus, clinical phrases altered,
what is removed from MedQA vignettes (text with no identifiers but ages: a false-positive count), and the time
to scrub 32 kB of adversarial input. Prints figures, asserts nothing (the tests hold the gates).

    python bench/deid_recall.py
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluator.deid import scrub
from tests.evaluator.deid_corpus import CLINICAL_PHRASES, corpus, evaluate
from tests.evaluator.test_deid import ADVERSARIAL

MEDQA = ROOT / "data" / "mcq" / "medqa_us_dev.jsonl"


def main() -> None:
    notes = corpus()
    figures = evaluate(scrub)
    planted = sum(figures.planted.values())
    print(f"corpus: {len(notes)} notes, {planted} identifiers, {len(CLINICAL_PHRASES)} clinical phrases")
    print(f"{'kind':<12} found/planted  recall")
    for kind, n in sorted(figures.planted.items()):
        found = figures.found.get(kind, 0)
        print(f"{kind:<12} {found:>5}/{n:<7} {found / n:6.1%}")
    print(f"overall recall: {sum(figures.found.values())}/{planted} = {figures.recall:.1%}")
    print(f"clinical phrases altered: {len(figures.clinical_altered)}")
    for phrase in figures.clinical_altered:
        print(f"  {phrase}")

    if MEDQA.exists():
        removed: Counter[str] = Counter()
        words = 0
        for line in MEDQA.read_text().splitlines():
            row = json.loads(line)
            options = row.get("options") or {}
            text = (
                row["question"]
                + " "
                + " ".join(map(str, options.values() if isinstance(options, dict) else options))
            )
            words += len(text.split())
            removed.update(label for _, _, label in scrub(text).spans)
        print(
            f"MedQA dev vignettes ({words} words, no identifiers but ages): removed {dict(removed) or 'nothing'}"
        )

    scrub("warm up: Dr. Smith")
    timings = {}
    for kind, make in ADVERSARIAL.items():
        text = make(32 * 1024)
        start = time.perf_counter()
        scrub(text)
        timings[kind] = time.perf_counter() - start
    worst = max(timings, key=timings.get)
    print(
        f"32 kB adversarial: e-mail-shaped {timings['email'] * 1000:.0f} ms; worst {worst} {timings[worst] * 1000:.0f} ms"
    )
    double = ADVERSARIAL[worst](64 * 1024)
    start = time.perf_counter()
    scrub(double)
    print(f"64 kB of the worst: {(time.perf_counter() - start) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
