"""The eval pipeline without a model: scripted samplers and judges through the real evals, scorers and report.
Fast; the real-model path is in test_end_to_end_real.py."""

import asyncio
import json

import pytest

from evaluator import report
from evaluator.evals.mcq import MCQEval
from evaluator.evals.summary import SummaryEval
from evaluator.judges.base import Judge
from evaluator.retry import Backoff, Retryable, with_retries
from evaluator.runner import run_local
from evaluator.scorers.judge import JudgeScorer
from evaluator.types import MCQItem, MCQOutput, SummaryItem

from .fakes import ScriptedJudge, ScriptedSampler

OPTS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Alteplase"}
ITEMS = [MCQItem(id=f"q{i}", question=f"Question {i}?", options=OPTS, answer="B") for i in range(6)]
BASE = ScriptedSampler(
    "base", {f"q{i}": "A" if i < 4 else "B" for i in range(6)}, broken={f"q{i}" for i in range(6)}
)
TUNED = ScriptedSampler("tuned", {f"q{i}": "B" if i < 5 else "C" for i in range(6)}, broken={"q0"})


def _summary(rows, models, ev):
    return {
        "run": {
            "started": "t",
            "seconds": 0,
            "source": "test",
            "models": models,
            "judges": ["scripted"],
            "weave": "off",
            "config": {"seed": 0, "limit": None},
        },
        "notes": [],
        "datasets": {
            "data/mcq/test.jsonl": {"kind": ev.kind, "n_items": len(ITEMS), **ev.summarize(rows, models)}
        },
    }


def test_mcq_pipeline_scores_summary_and_report(tmp_path):
    judge = ScriptedJudge(['{"score": 5, "explanation": "right"}', "not json at all"])
    ev = MCQEval(JudgeScorer([Judge(judge)]), raw=True)
    rows = []
    for s in (BASE, TUNED):
        rows += asyncio.run(run_local(ev, s, ITEMS, 2, lambda r: None))
    summary = _summary(rows, ["base", "tuned"], ev)
    m = summary["datasets"]["data/mcq/test.jsonl"]["models"]
    assert m["base"]["accuracy"]["estimate"] == pytest.approx(2 / 6)
    assert m["tuned"]["accuracy"]["estimate"] == pytest.approx(5 / 6)
    assert m["base"]["format_compliance"]["estimate"] == 0.0
    assert m["base"]["choices"] == {"A": 4, "B": 2} and m["base"]["answer_key"] == {"B": 6}
    assert m["tuned"]["format_compliance"]["estimate"] == pytest.approx(5 / 6)
    # Every other judge reply is unparsable: recorded as unscored, never as a number.
    assert m["base"]["judge"]["unscored"] + m["tuned"]["judge"]["unscored"] == 6
    assert m["base"]["judge"]["estimate"] == 5.0
    comp = summary["datasets"]["data/mcq/test.jsonl"]["comparisons"][0]
    assert (comp["accuracy"]["a_only"], comp["accuracy"]["b_only"]) == (1, 4)
    assert comp["accuracy"]["method"] == "exact binomial"

    written = report.write_all(tmp_path, rows, summary)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 12  # one row per item per model
    row = json.loads(lines[0])
    for key in ("item_id", "model", "output", "raw_output", "scores", "judges"):
        assert key in row
    for key in ("correct", "format_ok", "judge", "latency_s", "tokens_per_s"):
        assert key in row["scores"]
    html = (tmp_path / "report.html").read_text()
    assert "Question 0?" in html and "McNemar" in html and "unscored" in html
    # Model output is escaped: its tags are shown, not swallowed by the browser (and cannot inject markup).
    assert "&lt;analysis&gt;because A&lt;/analysis&gt;" in html and "<analysis>" not in html
    for png in ("accuracy.png", "judge_scores.png", "latency.png"):
        assert written[png].stat().st_size > 5000
        assert written[png].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_tag_scores_zero_without_calling_the_judge():
    judge = ScriptedJudge(['{"score": 5, "explanation": "x"}'])
    scorer = JudgeScorer([Judge(judge)])
    out = MCQOutput(
        "base", raw_text="<answer>A</answer><answer>A</answer>", choice=None
    )  # the base model's loop
    verdicts = asyncio.run(scorer.score_mcq(ITEMS[0], out))
    assert [v.score for v in verdicts] == [0.0] and judge.sent == []


def test_several_judges_are_averaged_and_external_ones_get_scrubbed_text():
    local = ScriptedJudge(['{"score": 4, "explanation": "a"}'], name="local")
    remote = ScriptedJudge(['{"score": 2, "explanation": "b"}'], name="remote", external=True)
    scorer = JudgeScorer([Judge(local), Judge(remote)])
    item = MCQItem(
        id="p",
        question="Mr. John Smith, MRN 12345678, seen on March 3, 2021, has chest pain.",
        options=OPTS,
        answer="B",
    )
    out = asyncio.run(TUNED.answer_mcq(ITEMS[1]))
    verdicts = asyncio.run(scorer.score_mcq(item, out))
    assert sorted(v.score for v in verdicts) == [2.0, 4.0]
    local_text = local.sent[0][1]["content"]
    remote_text = remote.sent[0][1]["content"]
    assert "Smith" in local_text  # a local judge sees the text as it is
    for ident in ("Smith", "12345678", "March 3, 2021"):
        assert ident not in remote_text
    assert "chest pain" in remote_text


def test_summary_eval_rouge_and_judge():
    items = [
        SummaryItem(
            id="s1",
            source="t",
            text="Long note. Chest pain. Aspirin given.",
            reference="Chest pain treated with aspirin. Stable.",
        )
    ]
    ev = SummaryEval(JudgeScorer([Judge(ScriptedJudge(['{"score": 3, "explanation": "ok"}']))]))
    rows = asyncio.run(run_local(ev, BASE, items, 1, lambda r: None))
    assert rows[0]["scores"]["rouge1"] > 0.5 and rows[0]["scores"]["judge"] == 3.0
    s = ev.summarize(rows, ["base"])["models"]["base"]
    assert s["rouge1"]["estimate"] == rows[0]["scores"]["rouge1"]


def test_retry_backoff_with_jitter_and_retry_after():
    slept = []

    async def fake_sleep(d):
        slept.append(d)

    attempts = {"n": 0}

    async def flaky():
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise Retryable("429", retry_after=2.0 if attempts["n"] == 2 else None)
        return "ok"

    import random

    got = asyncio.run(with_retries(flaky, Backoff(5, 0.5, 30), rng=random.Random(0), sleep=fake_sleep))
    assert got == "ok" and attempts["n"] == 3
    assert 0 <= slept[0] <= 0.5 and slept[1] == pytest.approx(2.0)  # jittered, then the server's Retry-After

    async def always():
        raise Retryable("503")

    with pytest.raises(Retryable):
        asyncio.run(with_retries(always, Backoff(3, 0.01, 0.01), sleep=fake_sleep))


def test_combine_reports_runs_made_separately(tmp_path):
    """Base and fine-tuned run separately on the same items: --combine pairs them without model calls."""
    from evaluator.cli import main

    ev = MCQEval(JudgeScorer([]), raw=True)
    for name, sampler in (("a", BASE), ("b", TUNED)):
        rows = asyncio.run(run_local(ev, sampler, ITEMS, 1, lambda r: None))
        for r in rows:
            r["dataset"] = "data/mcq/test.jsonl"
        report.write_jsonl(tmp_path / f"{name}.jsonl", rows)
    out = tmp_path / "combined"
    assert main(["--combine", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    comp = summary["datasets"]["data/mcq/test.jsonl"]["comparisons"][0]
    assert (comp["a"], comp["b"], comp["n"]) == ("base", "tuned", 6)
    assert (comp["accuracy"]["a_only"], comp["accuracy"]["b_only"]) == (1, 4)
    assert len((out / "results.jsonl").read_text().splitlines()) == 12
    # The per-mode table pairs the two runs; its command runs both models at once on the same items.
    (base_row, tuned_row) = summary["modes"]
    assert base_row["paired"] is None and tuned_row["paired"]["p_value"] == comp["accuracy"]["p_value"]
    assert tuned_row["command"].startswith("python evaluator.py --dataset data/mcq/test.jsonl --limit 6")
    assert "--models base,tuned" in tuned_row["command"]
    with pytest.raises(ValueError, match="more than one"):
        main(
            ["--combine", str(tmp_path / "a.jsonl"), str(tmp_path / "a.jsonl"), "--out", str(tmp_path / "x")]
        )


def test_rows_for_weave_are_de_identified_and_scores_carry_no_text():
    from evaluator.weave_sink import scrub_deep, weave_inputs, weave_output, weave_scores

    item = MCQItem(id="q1", question="Mrs. Jane Roe (MRN 99887766) has dyspnea.", options=OPTS, answer="B")
    ev = MCQEval(JudgeScorer([]), raw=True)
    (row,) = asyncio.run(run_local(ev, TUNED, [item], 1, lambda r: None))
    inputs, output, scores = weave_inputs(row), weave_output(row), weave_scores(row)
    assert "Roe" not in inputs["question"] and "99887766" not in inputs["question"]
    assert "dyspnea" in inputs["question"] and inputs["item_id"] == "q1" and inputs["options"] == OPTS
    assert set(output) == {"output", "raw_output", "served_text", "judges"} and "scores" not in inputs
    assert scores["correct"] is True and all(not isinstance(v, str) for v in scores.values())
    assert scrub_deep({"a": ["call 415-555-0100", 3], "b": None}) == {"a": ["call [PHONE]", 3], "b": None}
