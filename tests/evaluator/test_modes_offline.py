"""Every mode through the real runner, evals, scorers, gates and report, with scripted samplers and a scripted
judge (no model): what each figure, paired test and gate verdict must be for outputs chosen to hit them.
The real-model path is test_modes_end_to_end_real.py."""

import asyncio
import json
from pathlib import Path

import pytest

from evaluator import datasets, report, runner
from evaluator.cli import build_parser, config_from_args
from evaluator.config import EvalConfig
from evaluator.judges.base import Judge
from evaluator.scorers import degenerate
from evaluator.types import TextOutput
from tests.conftest import ROOT

from .fakes import ScriptedJudge, ScriptedSampler

N = 6
MCQ, MTS = "data/mcq/medqa_us_dev.jsonl", "data/summarization/mts_dialog_valid.jsonl"
ACI = "data/summarization/aci_bench_valid_5.jsonl"
PUBMEDQA, NOTES = "data/pubmedqa/pubmedqa_dev.jsonl", "data/notes/note_instructions_dev.jsonl"
OPEN = "data/open/mediqa_questions_dev.jsonl"


def _rows(path: str, n: int = N) -> list[dict]:
    return datasets.read_jsonl(ROOT / path)[:n]


def _samplers():
    mcq = _rows(MCQ)
    notes = _rows(NOTES)
    # base: always "A"; "Yes." to every PubMedQA question; a looping open answer; a summary that says nothing;
    # one note answer that copies the note (echo) and one empty answer.
    base_texts = {r["id"]: "Rest and fluids help. " * 6 for r in _rows(OPEN)}
    base_texts |= {r["id"]: "No summary available for this visit." for r in _rows(MTS) + _rows(ACI, 2)}
    base_texts[notes[1]["id"]] = " ".join(notes[1]["note"].split()[:80])
    base_texts[notes[2]["id"]] = ""
    base = ScriptedSampler("base", {r["id"]: "A" for r in mcq}, texts=base_texts)
    # tuned: the answer key, the gold decision with the long answer, the reference summary, a plain answer.
    tuned_texts = {r["id"]: f"{r['decision'].capitalize()}. {r['reference']}" for r in _rows(PUBMEDQA)}
    tuned_texts |= {r["id"]: r["reference"] for r in _rows(MTS) + _rows(ACI, 2) + notes}
    tuned_texts |= {r["id"]: "See a doctor if the pain persists after two weeks." for r in _rows(OPEN)}
    tuned = ScriptedSampler("tuned", {r["id"]: r["answer_idx"] for r in mcq}, texts=tuned_texts)
    return base, tuned


@pytest.fixture
def scripted(monkeypatch):
    base, tuned = _samplers()
    judge = ScriptedJudge(['{"score": 4, "explanation": "fine"}'])

    def samplers(cfg, res, settings):
        res.samplers += [base, tuned]

    def judges(cfg, res, settings):
        res.judges.append(Judge(judge))

    monkeypatch.setattr(runner, "_build_samplers", samplers)
    monkeypatch.setattr(runner, "_build_judges", judges)
    return base, tuned, judge


def _config() -> EvalConfig:
    return EvalConfig(
        models=["base", "tuned"],
        datasets=[
            {"path": MCQ, "judge": False},
            MTS,
            {"path": ACI, "limit": 2, "max_tokens": 384},
            {"path": PUBMEDQA, "judge": False},
            {"path": NOTES, "judge": False},
            OPEN,
        ],
        limit=N,
        # Every gate's full set is these few items here, so the verdicts are pass/fail, not incomplete.
        gates={"mcq_required_n": N, "summary_required_n": N, "note_qa_required_n": N},
    )


def test_every_mode_figures_gates_and_report(tmp_path, scripted):
    base, tuned, judge = scripted
    result = asyncio.run(runner.run(_config(), tmp_path))
    s = result.summary
    ds = s["datasets"]
    assert [d["kind"] for d in ds.values()] == ["mcq", "summary", "summary", "note_qa", "note_qa", "open"]

    # Styles and answer lengths per dataset reach the sampler: ACI-Bench as SOAP with its own length.
    seen = {(kind, style, mt) for kind, _, style, mt in tuned.calls_seen if kind == "summary"}
    assert seen == {("summary", "brief", 192), ("summary", "soap", 384)}
    assert {mt for kind, *_, mt in tuned.calls_seen if kind == "note_qa"} == {128}

    mcq = ds[MCQ]["models"]
    assert mcq["base"]["max_letter_share"]["letter"] == "A"
    assert mcq["base"]["max_letter_share"]["estimate"] == 1
    # The key of the first 6 questions is B, B, D, B, C, D: always right still means B half the time.
    assert mcq["tuned"]["max_letter_share"]["letter"] == "B"
    assert mcq["tuned"]["max_letter_share"]["estimate"] == pytest.approx(0.5)
    assert mcq["tuned"]["degenerate"]["count"] == 0 and mcq["tuned"]["degenerate_on"] == "raw"
    acc = ds[MCQ]["comparisons"][0]["accuracy"]
    assert (acc["test"], acc["a_only"], acc["b_only"], acc["method"]) == ("mcnemar", 0, N, "exact binomial")
    assert acc["p_value"] == pytest.approx(2 / 2**N)

    mts = ds[MTS]
    assert mts["models"]["tuned"]["rougeL"]["estimate"] == 1.0
    rouge = mts["comparisons"][0]["rougeL"]
    assert rouge["test"] == "wilcoxon" and rouge["b_higher"] == N and rouge["a_higher"] == 0
    assert rouge["p_value"] == pytest.approx(2 / 2**N)  # exact: all 6 differences favour tuned
    assert mts["models"]["tuned"]["judge"]["estimate"] == 4.0  # summaries judged

    pub = ds[PUBMEDQA]["models"]
    # Gold decisions of the first 6: no, maybe, no, yes, yes, no -> majority "no", 50%.
    assert pub["base"]["majority_class"] == {"decision": "no", "rate": 0.5}
    assert pub["base"]["decision_accuracy"]["estimate"] == pytest.approx(2 / 6)
    assert pub["base"]["decision_stated"]["estimate"] == 1.0 and pub["base"]["decisions"] == {"yes": 6}
    assert pub["tuned"]["decision_accuracy"]["estimate"] == 1.0
    # ROUGE-L is on the long answer: "No. <reference>" against the reference scores 1.
    assert pub["tuned"]["rougeL"]["estimate"] == 1.0
    assert ds[PUBMEDQA]["main_metric"] == "decision_accuracy" and ds[NOTES]["main_metric"] == "rougeL"

    notes = ds[NOTES]["models"]["base"]["degenerate"]
    assert notes["counts"] == {"empty": 1, "loop": 0, "echo": 1} and notes["count"] == 2 and notes["n"] == N
    opened = ds[OPEN]["models"]
    assert opened["base"]["degenerate"]["counts"]["loop"] == N and opened["tuned"]["degenerate"]["count"] == 0
    assert opened["tuned"]["judge"]["estimate"] == 4.0 and ds[OPEN]["main_metric"] == "judge"
    deg = ds[OPEN]["comparisons"][0]["degenerate"]
    assert (deg["a_only"], deg["b_only"]) == (N, 0)
    # Sets with judge: false never reach the judge: 6 MTS + 2 ACI + 6 open items per model.
    assert len(judge.sent) == 2 * (N + 2 + N)

    gates = {(g["model"], g["id"]): g for g in s["gates"]["results"]}
    expect = {
        ("base", "open.degenerate"): "fail",
        ("tuned", "open.degenerate"): "pass",
        ("base", "note_qa.degenerate"): "fail",  # 2 of 12 note answers
        ("tuned", "mcq.accuracy"): "pass",
        ("base", "mcq.accuracy"): "fail",
        ("base", "mcq.max_letter_share"): "fail",
        ("tuned", "mcq.max_letter_share"): "fail",
        ("tuned", "mcq.format_compliance"): "pass",
        ("base", "summary.rougeL"): "fail",
        ("tuned", "summary.rougeL"): "pass",
        ("tuned", "summary.rougeL_above_base"): "pass",
        ("base", "note_qa.decision_accuracy"): "fail",
        ("tuned", "note_qa.decision_accuracy"): "pass",
        ("tuned", "note_qa.decision_stated"): "pass",
    }
    assert {k: gates[k]["status"] for k in expect} == expect
    assert ("base", "summary.rougeL_above_base") not in gates  # the base is not compared with itself
    assert gates[("base", "note_qa.decision_accuracy")]["threshold"] == 0.5
    assert s["gates"]["models"] == {"base": "fail", "tuned": "fail"}  # tuned: the letter-share gate

    modes = {(r["dataset"], r["model"]): r for r in s["modes"]}
    assert len(modes) == 12
    row = modes[(PUBMEDQA, "tuned")]
    assert row["metric"] == "decision_accuracy" and row["value"]["estimate"] == 1.0
    assert row["paired"]["test"] == "mcnemar" and row["paired"]["vs"] == "base"
    expected = f"python evaluator.py --dataset {PUBMEDQA} --limit {N} --models base,tuned --judge none"
    assert row["command"] == expected
    assert modes[(MTS, "base")]["paired"] is None and modes[(MTS, "tuned")]["paired"]["test"] == "wilcoxon"
    assert modes[(MTS, "tuned")]["command"].endswith("--models base,tuned")  # judges from the config

    written = report.write_all(tmp_path, result.rows, s)
    saved = json.loads(written["summary"].read_text())
    assert saved["gates"]["models"] == s["gates"]["models"] and len(saved["modes"]) == 12
    html = written["report"].read_text()
    for text in ("Per mode", "decision accuracy", "ROUGE-L", "mcq.max_letter_share", "Wilcoxon", "note_qa"):
        assert text in html
    # Result rows keep their shape: the new scores are flags and numbers, no added text.
    note_row = next(r for r in result.rows if r["eval"] == "note_qa" and r["model"] == "base")
    assert set(note_row) == {
        "eval", "item_id", "model", "source", "note", "question", "reference", "output", "raw_output",
        "scores", "judges", "dataset",
    }
    assert isinstance(note_row["scores"]["degenerate"], bool)


def test_degenerate_check_and_counts_use_the_core_rule():
    instruction = degenerate.open_instruction()
    assert degenerate.check("", "q", instruction) == {"degenerate": True, "degenerate_kind": "empty"}
    assert degenerate.check("the dose is ten mg daily. " * 4, "q", instruction)["degenerate_kind"] == "loop"
    echo = degenerate.check(instruction, "What is asthma?", instruction)
    assert echo == {"degenerate": True, "degenerate_kind": "echo"}
    assert degenerate.check("Asthma is a chronic airway disease.", "What is asthma?", instruction) == {
        "degenerate": False,
        "degenerate_kind": None,
    }
    assert degenerate.check(None, "q", instruction) == {"degenerate": None, "degenerate_kind": None}
    # What the core's guards caught while the model wrote: a loop cut short, an echo refused after its retry.
    cut = degenerate.check("Rest helps.", "q", instruction, finish_reason="repetition")
    assert cut == {"degenerate": True, "degenerate_kind": "loop"}
    refused = TextOutput("m", error="EchoedPrompt: the model echoed the prompt", refused="echo")
    assert degenerate.of(refused, "", "q", instruction)["degenerate_kind"] == "echo"
    failed = TextOutput("m", error="GenerationTimeout: too slow")
    assert degenerate.of(failed, "", "q", instruction)["degenerate"] is None
    scores = [
        {"degenerate": True, "degenerate_kind": "loop"},
        {"degenerate": True, "degenerate_kind": "echo"},
        {"degenerate": False, "degenerate_kind": None},
        {"degenerate": False, "degenerate_kind": None},
        {"degenerate": None, "degenerate_kind": None},  # a failed call: unknown, not counted either way
    ]
    d = degenerate.summarize(scores)
    assert (d["count"], d["n"], d["unknown"]) == (2, 4, 1) and d["estimate"] == 0.5
    assert d["counts"] == {"empty": 0, "loop": 1, "echo": 1} and d["low"] < 0.5 < d["high"]
    # The instruction for the echo check is the prompt without the user's input.
    assert "SOAP note" in degenerate.summary_instruction("soap")
    assert "[Note Begin]" in degenerate.note_qa_instruction()


def test_kind_detection_of_every_dev_set():
    kinds = {p: datasets.kind_of_file(ROOT / p) for p in (MCQ, MTS, ACI, PUBMEDQA, NOTES, OPEN)}
    assert kinds == {
        MCQ: "mcq", MTS: "summary", ACI: "summary", PUBMEDQA: "note_qa", NOTES: "note_qa", OPEN: "open"
    }
    _, items = datasets.load(ROOT / PUBMEDQA, 3)
    assert items[0].decision == "no" and items[0].note and items[0].reference
    _, items = datasets.load(ROOT / NOTES, 1)
    assert items[0].decision is None and items[0].meta["task"] == "Named Entity Recognition"
    with pytest.raises(ValueError, match="cannot tell"):
        datasets.kind_of({"id": "x", "text": "no reference"})


def test_cli_mode_dataset_limit_and_max_tokens_flags():
    cfg = config_from_args(build_parser().parse_args(["--mode", "note_qa"]))
    assert [str(d.path) for d in cfg.datasets] == [PUBMEDQA, "data/notes/note_instructions_dev.jsonl"]
    # --dataset keeps the config's settings for a listed set; --limit overrides every set's limit.
    aci = "data/summarization/aci_bench_valid.jsonl"
    cfg = config_from_args(build_parser().parse_args(["--dataset", aci, "--limit", "2"]))
    (ds,) = cfg.datasets
    assert (ds.max_tokens, cfg.limit_for(ds), cfg.max_tokens_for("summary", ds)) == (384, 2, 384)
    args = ["--dataset", aci, "--max-tokens", "32", "--limit", "0"]
    cfg = config_from_args(build_parser().parse_args(args))
    assert cfg.max_tokens_for("summary", cfg.datasets[0]) == 32 and cfg.limit_for(cfg.datasets[0]) is None
    # An explicit judge judges every set, also those the config leaves unjudged.
    cfg = config_from_args(build_parser().parse_args(["--mode", "mcq", "--judge", "llamacpp:gemma3-270m"]))
    assert cfg.datasets[0].judge and cfg.judge_flags == ["llamacpp:gemma3-270m"]
    with pytest.raises(SystemExit):
        config_from_args(build_parser().parse_args(["--dataset", MCQ, "--mode", "open"]))


def test_an_echo_refused_by_the_core_is_recorded_as_refused():
    import time

    from evaluator.samplers import _failed
    from medgpt import tasks

    echoed = getattr(tasks, "EchoedPrompt", None)
    if echoed is None:
        pytest.skip("this core has no echo guard")
    out = _failed(TextOutput, "m", time.perf_counter(), echoed("m", "open", ["echo", "echo"]))
    assert out.refused == "echo" and out.error.startswith("EchoedPrompt")
    assert _failed(TextOutput, "m", time.perf_counter(), tasks.PromptTooLong("too long")).refused is None


def test_config_is_the_yaml_under_the_environment_under_the_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDGPT_EVAL_MCQ__RAW", "false")
    monkeypatch.setenv("MEDGPT_EVAL_SEED", "7")
    cfg = config_from_args(build_parser().parse_args([]))
    assert cfg.mcq.raw is False and cfg.mcq.max_tokens == 256 and cfg.seed == 7  # the rest of mcq: the YAML
    assert cfg.models == ["gemma3-270m", "medgpt"] and len(cfg.datasets) == 6
    args = ["--seed", "3", "--models", "a, b", "--threads", "1", "--weave-project", "t/p"]
    cfg = config_from_args(build_parser().parse_args([*args, "--engine", "ollama"]))
    got = (cfg.seed, cfg.models, cfg.n_threads, cfg.weave.project, cfg.engine)
    assert got == (3, ["a", "b"], 1, "t/p", "ollama")
    assert cfg.mcq.raw is False  # a flag that was not given leaves the environment's value
    # A typo in the config file fails loudly instead of running with the default.
    bad = tmp_path / "bad.yaml"
    bad.write_text("mcq: {max_token: 64}\n")
    with pytest.raises(ValueError, match="max_token"):
        config_from_args(build_parser().parse_args(["--config", str(bad)]))


def test_paths_resolve_against_medgpt_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDGPT_HOME", str(tmp_path))
    assert EvalConfig().resolve(Path("data/x.jsonl")) == tmp_path / "data" / "x.jsonl"
