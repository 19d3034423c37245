"""Scorers, one file per family: ``exact`` (choice accuracy, format compliance, latency, throughput),
``rouge`` (ROUGE-1/2/L against references) and ``judge`` (LLM-as-judge, reference-guided, averaged over
judges).

Per-item scorers are pure functions of (item, output) so the local run and the Weave run compute the same
numbers; the ``summarize_*`` functions turn a list of per-item scores into the figures of the report, with
intervals.
"""
