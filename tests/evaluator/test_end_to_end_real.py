"""``python evaluator.py`` end to end on a few rows: the real Gemma 3 270M GGUF as the model under test
through the core llama.cpp engine and ``medgpt.tasks`` (as the gateway serves it), and the same local engine
as the judge."""

from __future__ import annotations

import json

import pytest

from evaluator.cli import main
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_evaluator_cli_real_model_and_local_judge(tmp_path, gguf_path, capsys):
    summaries = tmp_path / "one_summary.jsonl"
    first = (ROOT / "data/summarization/mts_dialog_valid_20.jsonl").read_text().splitlines()[0]
    summaries.write_text(first + "\n")
    out = tmp_path / "run"
    rc = main(
        [
            "--models",
            "gemma3-270m,medgpt-does-not-exist",
            "--dataset",
            "data/mcq/medqa_us_dev.jsonl",
            "--dataset",
            str(summaries),
            "--limit",
            "2",
            "--max-tokens",
            "48",
            "--judge",
            "llamacpp:gemma3-270m",
            "--threads",
            "1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["eval"], r["item_id"]) for r in rows] == [
        ("mcq", "medqa_us_test_0000"),
        ("mcq", "medqa_us_test_0002"),
        ("summary", json.loads(first)["id"]),
    ]
    for r in rows[:2]:
        assert r["model"] == "gemma3-270m"
        # Served answers always name an option (grammar + rescue); the raw pass is the model as it is.
        assert r["output"]["choice"] in r["options"]
        assert r["output"]["completion_tokens"] > 0 and r["output"]["seconds"] > 0
        assert r["raw_output"] is not None and r["raw_output"]["raw_text"]
        assert isinstance(r["scores"]["correct"], bool) and isinstance(r["scores"]["format_ok"], bool)
        assert r["scores"]["correct"] == (r["output"]["choice"] == r["reference"]["choice"])
        # The judge graded the served answer (analysis + chosen option; 48 tokens usually end inside the
        # analysis, so the rescue step chose) and its reply was JSON thanks to the schema.
        assert r["served_text"].startswith("<analysis>") and r["served_text"].endswith("</answer>")
        assert [v["judge"] for v in r["judges"]] == ["llamacpp:gemma3-270m"]
        v = r["judges"][0]
        # The schema puts "score" first, so even an explanation cut off by max_tokens leaves a parseable
        # score.
        assert v["raw"].lstrip().startswith("{") and '"score"' in v["raw"]
        assert v["score"] in {0, 1, 2, 3, 4, 5} and v["error"] is None
    summ = rows[2]
    assert 0 <= summ["scores"]["rougeL"] <= 1
    # The base model at 48 tokens often copies the instruction: the core's echo guard then refuses the answer
    # (the gateway's 502), which the evaluator counts as a degenerate echo, not as a missing answer.
    if summ["output"]["error"]:
        assert summ["output"]["refused"] == "echo" and summ["scores"]["degenerate_kind"] == "echo"
    else:
        assert summ["output"]["summary"] and isinstance(summ["scores"]["degenerate"], bool)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["models"] == ["gemma3-270m"]
    assert any("medgpt-does-not-exist" in n for n in summary["notes"])  # skipped, and said so
    mcq = summary["datasets"]["data/mcq/medqa_us_dev.jsonl"]["models"]["gemma3-270m"]
    assert mcq["n"] == 2 and mcq["accuracy"]["n"] == 2 and mcq["accuracy"]["low"] <= mcq["accuracy"]["high"]
    html = (out / "report.html").read_text()
    assert "medqa_us_test_0000" in html and "llamacpp:gemma3-270m" in html
    assert (out / "accuracy.png").exists() and (out / "latency.png").exists()
    assert "MedGPT eval" in capsys.readouterr().out  # the terminal table
