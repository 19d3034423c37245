"""``python evaluator.py`` on a few rows of every mode through the real Gemma 3 270M GGUF (the base model,
via ``CoreSampler`` → ``medgpt.tasks`` → the core llama.cpp engine, as the gateway serves it): every mode's
figures, the per-mode table and the gates land in ``summary.json`` and ``report.html``."""

from __future__ import annotations

import json

import pytest

from evaluator.cli import main

pytestmark = pytest.mark.slow
SETS = {
    "data/mcq/medqa_us_dev.jsonl": "mcq",
    "data/summarization/mts_dialog_valid_20.jsonl": "summary",
    "data/pubmedqa/pubmedqa_dev.jsonl": "note_qa",
    "data/notes/note_instructions_dev.jsonl": "note_qa",
    "data/open/mediqa_questions_dev.jsonl": "open",
}
LIMIT, MAX_TOKENS = 2, 24


def test_every_mode_on_a_few_rows_writes_summary_and_report(tmp_path, gguf_path):
    out = tmp_path / "run"
    args = ["--models", "gemma3-270m", "--limit", str(LIMIT), "--max-tokens", str(MAX_TOKENS)]
    args += ["--judge", "none", "--threads", "1", "--out", str(out), "--quiet"]
    for path in SETS:
        args += ["--dataset", path]
    assert main(args) == 0

    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    expected = [(p, k) for p, k in SETS.items() for _ in range(LIMIT)]
    assert [(r["dataset"], r["eval"]) for r in rows] == expected
    for r in rows:
        o, s = r["output"], r["scores"]
        assert r["model"] == "gemma3-270m" and o["seconds"] > 0
        # The one definition of degenerate output (medgpt.guards) was applied to every answer; an answer the
        # core's echo guard refused (the gateway's 502) is an echo, any other failure would be unknown.
        assert isinstance(s["degenerate"], bool), o["error"]
        assert (s["degenerate_kind"] is not None) == s["degenerate"]
        if o["error"] is not None:
            assert o["refused"] == "echo" and s["degenerate_kind"] == "echo"
        else:
            assert o["completion_tokens"] > 0
            if r["eval"] in {"note_qa", "open"}:
                assert o["finish_reason"] in {"stop", "length", "repetition"}
    for r in (r for r in rows if r["dataset"].startswith("data/pubmedqa")):
        s = r["scores"]
        assert s["decision"] in {"yes", "no", "maybe", None}
        assert s["decision_stated"] == (s["decision"] is not None)
        assert s["decision_correct"] == (s["decision"] == r["reference"]["decision"])
        assert 0 <= s["rougeL"] <= 1
    assert all(r["raw_output"]["raw_text"] for r in rows if r["eval"] == "mcq")  # degenerate on the raw text

    summary = json.loads((out / "summary.json").read_text())
    ds = summary["datasets"]
    assert {p: d["kind"] for p, d in ds.items()} == SETS
    for path, d in ds.items():
        m = d["models"]["gemma3-270m"]
        assert m["n"] == LIMIT and m["degenerate"]["n"] + m["degenerate"]["unknown"] == LIMIT
        assert sum(m["degenerate"]["counts"].values()) == m["degenerate"]["count"]
    pub = ds["data/pubmedqa/pubmedqa_dev.jsonl"]["models"]["gemma3-270m"]
    assert pub["majority_class"]["rate"] == 0.5  # gold decisions of the first two rows: no, maybe
    assert pub["decision_accuracy"]["n"] == LIMIT and pub["decision_stated"]["n"] == LIMIT
    mcq = ds["data/mcq/medqa_us_dev.jsonl"]["models"]["gemma3-270m"]
    share = mcq["max_letter_share"]
    assert share["letter"] == max(mcq["choices"], key=mcq["choices"].get)
    assert share["estimate"] == mcq["choices"][share["letter"]] / LIMIT

    # One row per mode and model in the per-mode table, each with the command that reproduces it.
    modes = summary["modes"]
    assert [(r["dataset"], r["mode"]) for r in modes] == list(SETS.items())
    for r in modes:
        assert r["command"] == (
            f"python evaluator.py --dataset {r['dataset']} --limit {LIMIT} --models gemma3-270m --judge none "
            f"--max-tokens {MAX_TOKENS}"
        )
        assert r["degenerate"]["n"] == LIMIT
    # Every gate is computed: on 2 rows the set-size gates are incomplete, the degenerate ones decided.
    gates = {g["id"]: g for g in summary["gates"]["results"]}
    assert {g["status"] for k, g in gates.items() if k.endswith(".degenerate")} <= {"pass", "fail"}
    for gate_id in ("mcq.accuracy", "mcq.max_letter_share", "mcq.format_compliance", "summary.rougeL"):
        assert gates[gate_id]["status"] == "incomplete" and isinstance(gates[gate_id]["passed"], bool)
    assert gates["summary.rougeL"]["dataset"] == "data/summarization/mts_dialog_valid_20.jsonl"
    assert gates["note_qa.decision_stated"]["value"] == pub["decision_stated"]["estimate"]
    assert summary["gates"]["models"]["gemma3-270m"] in {"fail", "incomplete"}

    html = (out / "report.html").read_text()
    for text in ("Per mode", "Gates", "decision accuracy", "mediqa_questions_dev", "note_instructions_dev"):
        assert text in html
