"""Weave is a sink for the finished rows: off without a project and WANDB_API_KEY (weave is never imported);
with both, the rows the local report is written from go to Weave, de-identified, one Weave evaluation per set
and model, and nothing else is traced.

The real ``weave`` client runs; W&B's cloud is replaced by a loopback stub (``wandb_stub.py``) that keeps
every request, so the tests read exactly what would have been uploaded. Samplers and judges are scripted (no
model)."""

import asyncio
import json
import sys

import pytest

from evaluator import runner
from evaluator.config import EvalConfig
from evaluator.judges.base import Judge

from .fakes import ScriptedJudge, ScriptedSampler
from .wandb_stub import WandbStub

# weave 0.54 touches a deprecated pydantic attribute on every op call: noise, not a finding.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

OPTIONS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Alteplase"}
#: Identifiers planted in the items and in the judge's explanation: none may reach W&B.
PLANTED = ("Smith", "12345678", "March 3, 2021", "415-555-0100", "Roe")


@pytest.fixture
def scripted(monkeypatch):
    choices = {f"medqa_us_test_{i:04d}": "A" for i in range(20)} | {f"p{i}": "B" for i in range(3)}

    def samplers(cfg, res, settings):
        res.samplers.append(ScriptedSampler("base", choices))

    def judges(cfg, res, settings):
        reply = (
            '{"score": 3, "explanation": "Fits Mr. John Smith (call 415-555-0100), seen by Dr. Jane Roe."}'
        )
        res.judges.append(Judge(ScriptedJudge([reply])))

    monkeypatch.setattr(runner, "_build_samplers", samplers)
    monkeypatch.setattr(runner, "_build_judges", judges)


@pytest.fixture
def wandb(monkeypatch):
    with WandbStub() as stub:
        monkeypatch.setenv("WANDB_BASE_URL", stub.url)
        monkeypatch.setenv("WF_TRACE_SERVER_URL", stub.url)
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
        yield stub


@pytest.fixture
def planted_items(tmp_path):
    path = tmp_path / "mcq_planted.jsonl"
    question = (
        "Mr. John Smith, MRN 12345678, seen on March 3, 2021, has chest pain and a pulmonary embolism {}."
    )
    rows = [
        {"id": f"p{i}", "question": question.format(i), "options": OPTIONS, "answer_idx": "B" if i else "C"}
        for i in range(3)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_weave_mode_needs_project_and_key(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = EvalConfig(weave={"project": "team/medgpt"})
    assert runner.weave_mode(cfg) == "off"  # a project alone never reaches the network
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    cfg = EvalConfig(weave={"project": "team/medgpt"})
    assert runner.weave_mode(cfg) == "logged"
    assert runner.weave_mode(EvalConfig()) == "off"
    assert "x" * 40 not in cfg.model_dump_json() + repr(cfg)  # the key is never written into a report


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


def test_logged_run_sends_the_local_rows_de_identified(tmp_path, scripted, wandb, planted_items):
    cfg = EvalConfig(models=["base"], datasets=[planted_items], limit=0, weave={"project": "team/medgpt"})
    result = asyncio.run(runner.run(cfg, tmp_path / "out"))
    assert result.summary["run"]["weave"] == "logged" and result.notes == []
    assert list(result.summary["run"]["weave_urls"]) == ["mcq_planted · base"]

    calls = wandb.calls()
    predictions = [c for c in calls if "Evaluation.predict_and_score" in c["op_name"]]
    # One prediction per local row, with the local row's scores.
    assert len(predictions) == len(result.rows) == 3
    logged = {c["inputs"]["example"]["item_id"]: c["output"]["scores"] for c in predictions}
    for row in result.rows:
        assert logged[row["item_id"]]["correct"] == row["scores"]["correct"]
        assert logged[row["item_id"]]["judge"] == row["scores"]["judge"] == 3.0
    # Weave's summary carries the local summary's figures.
    (summary,) = [c["output"] for c in calls if "Evaluation.summarize" in c["op_name"]]
    local = result.summary["datasets"][str(planted_items)]["models"]["base"]
    assert summary["output"]["accuracy"] == local["accuracy"] and local["accuracy"]["estimate"] == 2 / 3

    uploaded = wandb.uploaded()
    assert "chest pain" in uploaded and "[NAME]" in uploaded  # the items went, de-identified
    for identifier in PLANTED:
        assert identifier not in uploaded, identifier
    # Weave's Sentry error reports are off unless configured (they may carry clinical text).
    from weave.telemetry import trace_sentry

    assert trace_sentry.global_trace_sentry._disabled


def test_weave_leaves_llm_clients_untraced(wandb):
    """Weave patches openai/groq clients by itself unless told not to; the sink tells it not to, so a judge's
    prompt is never traced outside the de-identified rows."""
    openai = pytest.importorskip("openai")
    from evaluator.weave_sink import WeaveSink

    client = openai.OpenAI(base_url=f"{wandb.url}/v1", api_key="test", max_retries=0)
    message = [{"role": "user", "content": "Mr. John Smith, MRN 12345678, has chest pain."}]
    with WeaveSink("team/medgpt").session():
        assert client.chat.completions.create(model="judge", messages=message).choices[0].message.content
        import groq  # imported after weave.init: Weave's import hook would patch it then

        later = groq.Groq(base_url=wandb.url, api_key="test", max_retries=0)
        later.chat.completions.create(model="judge", messages=message)
    assert sum(path.endswith("/chat/completions") for _, path, _ in wandb.requests) == 2
    assert wandb.calls() == [] and "Smith" not in wandb.uploaded()


def test_a_weave_failure_is_a_note_not_a_lost_run(tmp_path, scripted, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    cfg = EvalConfig(models=["base"], limit=2, judges=[], weave={"project": " "})  # weave.init refuses it
    result = asyncio.run(runner.run(cfg, tmp_path))
    assert len(result.rows) == 2 and result.summary["run"]["weave_urls"] == {}
    assert any(n.startswith("weave: the rows were not logged") for n in result.notes)
