"""prepare: prompts identical to inference, cleaned analyses, contamination check, deterministic split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.config import DataConfig
from finetune.data import (
    MCQ,
    ContaminationIndex,
    clean_explanation,
    example_from_mcq,
    mcq_from_reasoning_row,
    normalize_text,
    prepare,
    read_jsonl,
    split_rows,
)
from medgpt.prompts import mcq_messages, parse_mcq
from medgpt.templates import named

from .conftest import mcq_row, write_jsonl

OPTIONS = {"A": "Left anterior descending", "B": "Right coronary artery", "C": "Circumflex", "D": "Left main"}


def _mcq(explanation: str | None) -> MCQ:
    return MCQ("x1", "Which artery supplies the inferior wall?  ", OPTIONS, "B", explanation, "test")


def test_prompt_is_byte_identical_to_the_inference_prompt_and_completion_parses():
    mcq = _mcq("The RCA supplies the inferior wall in most people.")
    ex = example_from_mcq(mcq, DataConfig(prompt_format="gemma"))
    assert ex["prompt"] == named("gemma").render(mcq_messages("Which artery supplies the inferior wall?  ", OPTIONS))
    assert ex["prompt"].endswith("<start_of_turn>model\n") and not ex["prompt"].startswith("<bos>")
    assert ex["completion"] == (
        "<analysis>The RCA supplies the inferior wall in most people.</analysis>\n"
        "<answer>B: Right coronary artery</answer><end_of_turn>"
    )
    parsed = parse_mcq(ex["completion"], OPTIONS)  # the gateway's parser reads what the model is taught
    assert parsed.well_formed and parsed.choice == "B"


def test_rows_are_rendered_in_the_template_given_and_end_with_its_stop():
    """Another base's template (here ChatML with a default system turn, SmolLM2's layout) gives that layout's
    prompt and stop; the config's ``prompt_format`` alone names only a format, never a GGUF's template."""
    chatml = named("chatml", default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    ex = example_from_mcq(_mcq("The RCA supplies the inferior wall."), DataConfig(), chatml)
    assert ex["prompt"] == chatml.training_prompt(mcq_messages("Which artery supplies the inferior wall?  ", OPTIONS))
    assert ex["prompt"].startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert ex["prompt"].endswith("<|im_start|>assistant\n") and ex["completion"].endswith("</answer><|im_end|>")
    assert example_from_mcq(_mcq("x" * 40), DataConfig(), "llama3")["completion"].endswith("<|eot_id|>")
    with pytest.raises(ValueError, match="read from the base GGUF"):
        example_from_mcq(_mcq("The RCA supplies the inferior wall."), DataConfig(prompt_format="auto"))


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Ans-a. The oncotic pressure falls.", "The oncotic pressure falls."),
        ("Answer- A. Glycogen synthesis is inhibited here.", "Glycogen synthesis is inhibited here."),
        (
            "Ans: A. Pregnant women can be started on oseltamivir.",
            "Pregnant women can be started on oseltamivir.",
        ),
        ("Ans. is 'b' i.e., Hepatitis B virus is a DNA virus.", "Hepatitis B virus is a DNA virus."),
        ("(c) Fast anterograde transport uses kinesin.", "Fast anterograde transport uses kinesin."),
        (
            "Kinesin moves cargo   anterogradely\n along microtubules.",
            "Kinesin moves cargo anterogradely along microtubules.",
        ),
        (
            "Answers are in the textbook, chapter 4 says so.",
            "Answers are in the textbook, chapter 4 says so.",
        ),
    ],
)
def test_clean_explanation_removes_the_answer_key_only(raw, expected):
    assert clean_explanation(raw, 400) == expected


def test_clean_explanation_cuts_at_a_sentence_and_rejects_empty():
    text = "First sentence is here. " * 30
    out = clean_explanation(text, 100)
    assert len(out) <= 100 and out.endswith("here.")
    assert clean_explanation(None, 100) is None and clean_explanation("Ans-b", 100) is None
    assert "<" not in clean_explanation("Values <5 mmol are low in this assay.", 100)


def test_missing_explanation_template_or_drop():
    ex = example_from_mcq(_mcq(None), DataConfig(missing_explanation="template", prompt_format="gemma"))
    assert ex["completion"].startswith("<analysis>The best answer is B, Right coronary artery.</analysis>")
    assert ex["has_explanation"] is False
    assert example_from_mcq(_mcq(None), DataConfig(missing_explanation="drop", prompt_format="gemma")) is None


def test_normalize_text():
    assert normalize_text("  Which  ARTERY, is occluded?\n") == "which artery is occluded"


def test_contamination_exact_and_near_duplicates(eval_question):
    index = ContaminationIndex(n=8, threshold=0.5)
    index.add(eval_question)
    assert index.match(eval_question.upper().replace(",", " ;")) == "exact"
    near = eval_question.replace("45-year-old", "52-year-old").replace("two hours", "3 hours")
    assert index.match(near) == "near"
    contained = "Read the case. " + eval_question + " Choose the best answer."
    assert index.match(contained) == "near"
    assert index.match("Which drug is first-line for absence seizures in children and adolescents?") is None
    assert (
        index.match("Which artery is most likely occluded?") is None
    )  # short generic overlap is not a match


def test_split_is_seeded_and_independent_of_row_order():
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(100)]
    train, val = split_rows(rows, 0.1, seed=1)
    train2, val2 = split_rows(list(reversed(rows)), 0.1, seed=1)
    assert (train, val) == (train2, val2)
    assert len(val) == 10 and len(train) == 90
    assert {r["prompt"] for r in train}.isdisjoint({r["prompt"] for r in val})
    _, val3 = split_rows(rows, 0.1, seed=2)
    assert val3 != val


def test_prepare_drops_contaminated_rows_and_records_hashes(tmp_path: Path, eval_question):
    rows = [mcq_row(i, f"Question number {i} about renal physiology and the loop of Henle?", "Ans-b. Because.")
            for i in range(20)]  # fmt: skip
    rows.append(mcq_row(90, eval_question.lower(), "Copied from the evaluation set."))
    rows.append(mcq_row(91, eval_question.replace("45-year-old", "60-year-old"), None))
    rows.append({**rows[0], "id": "q92", "explanation": "Ans-b. A duplicate of row 0."})
    rows.append({"question": "no options", "options": {}, "answer_idx": "A"})
    train_file = write_jsonl(tmp_path / "pool.jsonl", rows)
    eval_file = write_jsonl(
        tmp_path / "eval.jsonl", [{"id": "e1", "question": eval_question, "options": OPTIONS}]
    )
    cfg = DataConfig(train_files=[train_file], eval_files=[eval_file], val_fraction=0.2, prompt_format="gemma")
    manifest = prepare(cfg, seed=3, out_dir=tmp_path / "out")
    assert manifest["contaminated_exact"] == ["q90"] and manifest["contaminated_near"] == ["q91"]
    assert manifest["duplicates"] == 1 and manifest["malformed"] == 1
    assert manifest["train_rows"] + manifest["val_rows"] == 20 and manifest["val_rows"] == 4
    train = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert not any(eval_question.lower()[:40] in r["prompt"].lower() for r in train)
    assert len(manifest["sources"][0]["sha256"]) == 64 and len(manifest["train_sha256"]) == 64
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest
    again = prepare(cfg, seed=3, out_dir=tmp_path / "again")
    assert again["train_sha256"] == manifest["train_sha256"]


def test_project_pool_is_clean_of_the_evaluation_sets():
    """The shipped pool against the shipped evaluation sets: the check runs on the real files."""
    from .conftest import ROOT

    cfg = DataConfig(
        train_files=[ROOT / "data/mcq/medmcqa_train_pool.jsonl"],
        eval_files=[ROOT / "data/mcq/medqa_us_dev.jsonl", ROOT / "data/pubmedqa/pubmedqa_dev.jsonl"],
    )
    from finetune.data import build_contamination_index

    index = build_contamination_index(cfg.eval_files)
    assert len(index) == 400
    eval_q = read_jsonl(ROOT / "data/mcq/medqa_us_dev.jsonl")[0]["question"]
    assert index.match(eval_q) == "exact"


def test_reasoning_dataset_rows_parse():
    row = {
        "instruction": "Answer the question.",
        "input": "###Question: Which vitamin deficiency causes scurvy?\n###Options:\nA. Vitamin A\nB. Vitamin C\n"
        "C. Vitamin D\nD. Vitamin K",
        "output": "###Rationale: Scurvy results from a lack of ascorbic acid.\n\n###Answer: OPTION B IS CORRECT.",
    }
    mcq = mcq_from_reasoning_row(row, "hf", 0)
    assert mcq is not None and mcq.answer == "B" and mcq.options["B"] == "Vitamin C"
    assert mcq.question == "Which vitamin deficiency causes scurvy?"
    assert mcq.explanation == "Scurvy results from a lack of ascorbic acid."
    assert mcq_from_reasoning_row({"input": "free text", "output": "x"}, "hf", 1) is None
