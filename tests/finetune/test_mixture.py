"""The multi-task mix: every mode present with serving prompts, letters balanced, dev rows never trained on."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from finetune.config import load_config
from finetune.data import MCQ, build_contamination_index, prepare, read_jsonl
from finetune.mixture import SOAP_OF_SECTION, draw_mix, mcq_and_open_rows, shuffle_options, task_rows
from medgpt import prompts
from medgpt.templates import named

from .conftest import ROOT


@pytest.fixture(scope="module")
def cfg():
    return load_config(ROOT / "config" / "finetune.yaml").resolved(ROOT)


@pytest.fixture(scope="module")
def candidates(cfg):
    index = build_contamination_index(cfg.data.eval_files)
    excluded = [r.get("text") or r.get("note") or r.get("transcription") for p in cfg.data.eval_text_files
                for r in read_jsonl(p)]  # fmt: skip
    return task_rows(cfg.data, index, cfg.seed, excluded)[0]


def test_shuffle_keeps_the_answer_text_and_balances_letters():
    mcq = MCQ("x", "Q?", {"A": "right", "B": "w1", "C": "w2", "D": "w3"}, "A", "because", "t")
    letters = Counter()
    for i in range(400):
        shuffled = shuffle_options(replace(mcq, id=f"id{i}"), seed=1)
        assert shuffled.options[shuffled.answer] == "right"
        assert sorted(shuffled.options.values()) == sorted(mcq.options.values())
        letters[shuffled.answer] += 1
    assert set(letters) == {"A", "B", "C", "D"} and max(letters.values()) < 0.35 * 400


def test_every_mode_has_candidates_with_serving_prompts_and_stop_tokens(candidates):
    for task in ("mcq", "open", "summary_dialogue", "summary_bullets", "summary_soap", "summary_description",
                 "summary_question", "note_pubmedqa", "note_instructions"):  # fmt: skip
        rows = candidates[task]
        assert rows, task
        for row in rows[:20]:
            assert row["prompt"].endswith("<start_of_turn>model\n") and row["completion"].endswith("<end_of_turn>")
            assert row["completion"].count("<end_of_turn>") == 1


def test_prompts_are_the_serving_builders_byte_for_byte(candidates):
    row = candidates["summary_soap"][0]
    assert "Subjective:" in row["completion"] and "Plan:" in row["completion"]
    dialogue = row["prompt"].split("[Text Begin]\n", 1)[1].split("\n[Text End]", 1)[0]
    assert row["prompt"] == named("gemma").render(prompts.summarize_messages(dialogue, "soap"))
    note_row = candidates["note_pubmedqa"][0]
    assert prompts.parse_decision(note_row["completion"]) in prompts.DECISIONS
    bullets = candidates["summary_bullets"][0]["completion"].removesuffix("<end_of_turn>")
    assert all(line.startswith("- ") for line in bullets.splitlines())


def test_mcq_rows_use_real_explanations_and_open_rows_are_disjoint(cfg):
    index = build_contamination_index(cfg.data.eval_files)
    mcq_rows, open_rows, counts = mcq_and_open_rows(cfg.data, index, cfg.seed)
    assert not any("The best answer is" in r["completion"] for r in mcq_rows)
    assert {r["id"].split(":", 1)[1] for r in mcq_rows}.isdisjoint(r["id"].split(":", 1)[1] for r in open_rows)
    letters = Counter(r["answer"] for r in mcq_rows)
    assert max(letters.values()) / len(mcq_rows) < 0.30, letters
    assert counts["no_explanation"] > 1000  # the template rows that taught "The best answer is A" are gone


def test_dev_rows_are_never_training_inputs(candidates):
    dev_notes = {r["note"].strip()[:200] for r in read_jsonl(ROOT / "data/notes/note_instructions_dev.jsonl")}
    dev_pubmed = {r["question"] for r in read_jsonl(ROOT / "data/pubmedqa/pubmedqa_dev.jsonl")}
    for row in candidates["note_instructions"] + candidates["summary_description"]:
        assert not any(note in row["prompt"] for note in dev_notes)
    assert not any(q in row["prompt"] for row in candidates["note_pubmedqa"] for q in dev_pubmed)


def test_soap_headings_cover_the_common_sections():
    assert {"GENHX", "EXAM", "ASSESSMENT", "PLAN"} <= set(SOAP_OF_SECTION)
    assert set(SOAP_OF_SECTION.values()) == set(prompts.SOAP_HEADINGS)


def test_draw_caps_tasks_drops_long_rows_and_is_seeded():
    rows = {"a": [{"id": f"a{i}", "prompt": "p" * (10 + i), "completion": "c"} for i in range(20)],
            "b": [{"id": f"b{i}", "prompt": "p", "completion": "c"} for i in range(5)]}  # fmt: skip
    chosen, report = draw_mix(rows, {"a": 4, "b": 10}, max_chars=20, seed=1)
    assert report["a"] == {"candidates": 20, "fit": 10, "chosen": 4} and report["b"]["chosen"] == 5
    assert [r["id"] for r in chosen] == [r["id"] for r in draw_mix(rows, {"a": 4, "b": 10}, 20, seed=1)[0]]
    assert all(len(r["prompt"]) + 1 <= 20 for r in chosen)


def test_prepare_writes_the_mix_with_per_task_counts(cfg, tmp_path: Path):
    data = cfg.data.model_copy(update={"mix": {"mcq": 5, "open": 3, "note_pubmedqa": 2}, "val_fraction": 0.2})
    manifest = prepare(data, seed=1, out_dir=tmp_path)
    assert manifest["mix"]["mcq"]["chosen"] == 5 and manifest["mix"]["summary_soap"]["chosen"] == 0
    assert manifest["train_rows"] + manifest["val_rows"] == 10
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").open()]
    assert Counter(r["task"] for r in rows) == +Counter(manifest["train_tasks"])  # + drops the zero counts
