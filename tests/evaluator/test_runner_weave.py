"""The runner's Weave switch: off without credentials, a logged weave.Evaluation with a project +
WANDB_API_KEY.

``weave.init`` is replaced by a recorder here (it would reach W&B): everything after it, the weave.Evaluation
with the Weave scorers, runs for real but unlogged. Samplers and judges are scripted (no model)."""

import asyncio
import sys

import pytest

from evaluator import runner
from evaluator.config import EvalConfig
from evaluator.judges.base import Judge

from .fakes import ScriptedJudge, ScriptedSampler

# weave 0.54 touches a deprecated pydantic attribute on every op call: noise, not a finding.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def scripted(monkeypatch):
    def samplers(cfg, res, settings):
        choices = {f"medqa_us_test_{i:04d}": "A" for i in range(0, 20)}
        res.samplers.append(ScriptedSampler("base", choices))

    def judges(cfg, res, settings):
        res.judges.append(Judge(ScriptedJudge(['{"score": 3, "explanation": "ok"}'])))

    monkeypatch.setattr(runner, "_build_samplers", samplers)
    monkeypatch.setattr(runner, "_build_judges", judges)


def test_weave_mode_needs_project_and_key(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = EvalConfig(weave={"project": "team/medgpt"})
    assert runner.weave_mode(cfg) == "off"  # a project alone never reaches the network
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert runner.weave_mode(cfg) == "logged"
    assert runner.weave_mode(EvalConfig()) == "off"
    assert runner.weave_mode(EvalConfig(weave={"offline_evaluation": True})) == "offline"


def test_local_run_writes_rows_in_item_order(tmp_path, scripted, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setitem(sys.modules, "weave", None)  # the local path must not import weave at all
    cfg = EvalConfig(models=["base"], limit=3, judges=[])
    result = asyncio.run(runner.run(cfg, tmp_path))
    assert [r["item_id"] for r in result.rows] == [
        "medqa_us_test_0000",
        "medqa_us_test_0002",
        "medqa_us_test_0003",
    ]
    assert result.summary["run"]["weave"] == "off"
    assert (
        tmp_path / "results.partial.jsonl"
    ).exists()  # streamed while running; report.write_all replaces it


def test_logged_run_is_a_weave_evaluation(tmp_path, scripted, monkeypatch):
    weave = pytest.importorskip("weave")
    inits = []
    monkeypatch.setattr(weave, "init", lambda project, **kw: inits.append(project))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    cfg = EvalConfig(models=["base"], limit=3, judges=[], weave={"project": "team/medgpt"})
    result = asyncio.run(runner.run(cfg, tmp_path))
    assert inits == ["team/medgpt"]
    assert result.summary["run"]["weave"] == "logged"
    ((label, ws),) = result.summary["weave_summaries"].items()
    assert "ExactScorer" in ws and "LLMJudgeScorer" in ws and "model_latency" in ws
    assert ws["ExactScorer"]["correct"]["true_count"] == sum(r["scores"]["correct"] for r in result.rows)
    assert all(r["scores"]["judge"] == 3.0 for r in result.rows)
