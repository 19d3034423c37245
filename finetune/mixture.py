"""The multi-task training mix: one row builder per mode the gateway serves, all through :mod:`medgpt.prompts`, rendered
in the base model's chat template.

An adapter trained on one template (MCQ) answers every other request with that template; so the mix covers every
mode ``/ask`` and ``/summarize`` serve, each with the exact serving prompt and a target that ends with the stop token:

=====================  ==========================================  =====================================================
task                   source (data/)                              target
=====================  ==========================================  =====================================================
mcq                    MedMCQA pool, rows with an explanation      ``<analysis>`` explanation ``<answer>`` with options
                                                                   shuffled per row (every letter equally common)
open                   MedMCQA pool, other rows with explanation   "<answer text>. <explanation>" to the question alone
summary_dialogue       MTS-Dialog train                            the note section (``brief``)
summary_bullets        MTS-Dialog train                            the note section, one ``- `` line per sentence
summary_soap           MTS-Dialog train                            the section under its SOAP heading, the rest
                                                                   "not documented"
summary_description    MTSamples transcriptions                    the one-line human description (``brief``)
summary_question       MeQSum train                                the one-line summary question (``brief``)
summary_aci            ACI-Bench train                             the full note (``soap``; only fits long rows)
note_pubmedqa          PubMedQA train split (not the dev 100)      "Yes|No|Maybe. <long answer>"
note_instructions      note instructions, train notes only         the reference answer
=====================  ==========================================  =====================================================

Each task draws at most ``mix.<task>`` rows (seeded); rows longer than ``max_chars`` are left out here rather than
skipped later, so the mix's proportions are the proportions trained on.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from finetune.config import DataConfig
from finetune.data import (
    MCQ,
    ContaminationIndex,
    clean_explanation,
    mcq_from_row,
    normalize_text,
    read_jsonl,
    row_template,
)
from medgpt import prompts
from medgpt.templates import ChatTemplate

Row = dict[str, Any]

#: MTS-Dialog section headers → the SOAP heading their content belongs under.
SOAP_OF_SECTION = {
    **dict.fromkeys(
        ["FAM/SOCHX", "GENHX", "PASTMEDICALHX", "CC", "PASTSURGICAL", "ALLERGY", "ROS", "MEDICATIONS",
         "IMMUNIZATIONS", "GYNHX", "OTHER_HISTORY"],  # fmt: skip
        "Subjective",
    ),
    **dict.fromkeys(["EXAM", "IMAGING", "LABS", "PROCEDURES", "EDCOURSE"], "Objective"),
    **dict.fromkeys(["ASSESSMENT", "DIAGNOSIS"], "Assessment"),
    **dict.fromkeys(["PLAN", "DISPOSITION"], "Plan"),
}

#: Questions that only make sense with their options ("Which of the following …", "All except …") are not open
#: questions.
_NEEDS_OPTIONS = ("following", "except", "all of the", "true", "false", "not ", "incorrect", "correct")


def _key(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def shuffle_options(mcq: MCQ, seed: int) -> MCQ:
    """The same question with its option texts in a seeded per-row order under the same letters; the answer letter
    follows its text. Over many rows every letter is the answer about equally often, so a model cannot learn a
    favourite letter."""
    letters = list(mcq.options)
    texts = [mcq.options[k] for k in letters]
    rng = random.Random(_key(str(seed), mcq.id))
    order = list(range(len(texts)))
    rng.shuffle(order)
    options = {letters[i]: texts[j] for i, j in enumerate(order)}
    answer = letters[order.index(letters.index(mcq.answer))]
    return MCQ(mcq.id, mcq.question, options, answer, mcq.explanation, mcq.source)


def _example(task: str, rid: str, messages: list[prompts.Message], target: str, fmt: ChatTemplate) -> Row:
    return {"id": f"{task}:{rid}", "task": task, **prompts.training_example(messages, target, fmt)}


def mcq_and_open_rows(
    cfg: DataConfig, index: ContaminationIndex, seed: int, template: ChatTemplate | str | None = None
) -> tuple[list[Row], list[Row], dict[str, int]]:
    """MCQ rows (options shuffled, explanation as analysis) and open-question rows from the MCQ pool, disjoint.

    Only rows with a real explanation are used: a template analysis ("The best answer is A, …") taught the last
    adapter to answer everything with it. A row goes to ``open`` when its question stands without options and a
    hash of its id says so (about one in three of those), to ``mcq`` otherwise.
    """
    fmt = row_template(cfg, template)
    counts = {"contaminated": 0, "no_explanation": 0, "duplicates": 0}
    seen: set[str] = set()
    mcq_rows: list[Row] = []
    open_rows: list[Row] = []
    for path in cfg.train_files:
        for raw in read_jsonl(path):
            mcq = mcq_from_row(raw, source=path.name)
            if mcq is None:
                continue
            if index.match(mcq.question):
                counts["contaminated"] += 1
                continue
            norm = normalize_text(mcq.question)
            if norm in seen:
                counts["duplicates"] += 1
                continue
            seen.add(norm)
            analysis = clean_explanation(mcq.explanation, cfg.max_analysis_chars)
            if analysis is None:
                counts["no_explanation"] += 1
                continue
            stands_alone = not any(w in mcq.question.lower() for w in _NEEDS_OPTIONS)
            if stands_alone and int(_key("open", mcq.id)[:8], 16) % 3 == 0:
                answer = mcq.options[mcq.answer].strip().rstrip(".")
                target = f"{answer[:1].upper()}{answer[1:]}. {analysis}"
                open_rows.append(_example("open", mcq.id, prompts.open_question_messages(mcq.question), target, fmt))
            else:
                shuffled = shuffle_options(mcq, seed)
                ex = prompts.mcq_training_example(shuffled.question, shuffled.options, shuffled.answer, analysis, fmt)
                mcq_rows.append({"id": f"mcq:{mcq.id}", "task": "mcq", "answer": shuffled.answer, **ex})
    return mcq_rows, open_rows, counts


def _section_rows(cfg: DataConfig, fmt: ChatTemplate) -> dict[str, list[Row]]:
    """MTS-Dialog train → brief, bullets and SOAP rows (the same dialogues, three target layouts)."""
    out: dict[str, list[Row]] = {"summary_dialogue": [], "summary_bullets": [], "summary_soap": []}
    for r in read_jsonl(cfg.mts_dialog):
        dialogue, section = r["dialogue"].replace("\r\n", "\n"), " ".join(r["section_text"].split())
        if not dialogue.strip() or not section:
            continue
        rid = str(r["id"])
        out["summary_dialogue"].append(
            _example("summary_dialogue", rid, prompts.summarize_messages(dialogue, "brief"), section, fmt)
        )
        out["summary_bullets"].append(
            _example("summary_bullets", rid, prompts.summarize_messages(dialogue, "bullets"),
                     prompts.bullets_target(section), fmt)  # fmt: skip
        )
        heading = SOAP_OF_SECTION.get(r["section_header"])
        if heading:
            out["summary_soap"].append(
                _example("summary_soap", rid, prompts.summarize_messages(dialogue, "soap"),
                         prompts.soap_target({heading: section}), fmt)  # fmt: skip
            )
    return out


def _simple_rows(
    task: str, path: Path, build: Callable[[Row], tuple[str, list[prompts.Message], str] | None], fmt: ChatTemplate
) -> list[Row]:
    rows = []
    for r in read_jsonl(path):
        built = build(r)
        if built is not None:
            rid, messages, target = built
            rows.append(_example(task, rid, messages, target, fmt))
    return rows


def _aci_soap(note: str) -> str:
    """ACI-Bench notes are already SOAP-like (CHIEF COMPLAINT … ASSESSMENT AND PLAN); trained on as they are."""
    return note.strip()


def task_rows(
    cfg: DataConfig,
    index: ContaminationIndex,
    seed: int,
    excluded_texts: Iterable[str] = (),
    template: ChatTemplate | str | None = None,
) -> tuple[dict[str, list[Row]], dict[str, int]]:
    """Every candidate row per task (before the per-task caps), rendered in the model's ``template`` (default: the
    config's named ``prompt_format``)."""
    fmt = row_template(cfg, template)
    excluded = {normalize_text(t)[:300] for t in excluded_texts}
    mcq_rows, open_rows, counts = mcq_and_open_rows(cfg, index, seed, fmt)
    tasks: dict[str, list[Row]] = {"mcq": mcq_rows, "open": open_rows, **_section_rows(cfg, fmt)}
    tasks["summary_description"] = _simple_rows(
        "summary_description",
        cfg.mtsamples,
        lambda r: None
        if normalize_text(r["transcription"])[:300] in excluded or not r.get("description")
        else (_key(r["transcription"])[:12], prompts.summarize_messages(r["transcription"], "brief"),
              r["description"]),  # fmt: skip
        fmt,
    )
    tasks["summary_question"] = _simple_rows(
        "summary_question",
        cfg.meqsum,
        lambda r: (str(r["file"]), prompts.summarize_messages(r["question"], "brief"), r["summary"]),
        fmt,
    )
    tasks["summary_aci"] = _simple_rows(
        "summary_aci",
        cfg.aci_bench,
        lambda r: (str(r["encounter_id"]), prompts.summarize_messages(r["dialogue"], "soap"), _aci_soap(r["note"])),
        fmt,
    )
    tasks["note_pubmedqa"] = _simple_rows(
        "note_pubmedqa",
        cfg.pubmedqa,
        lambda r: None
        if index.match(r["question"]) == "exact"
        else (str(r["pubid"]), prompts.note_qa_messages("\n".join(r["contexts"]), r["question"]),
              prompts.decision_answer(r["final_decision"], r["long_answer"])),  # fmt: skip
        fmt,
    )
    tasks["note_instructions"] = _simple_rows(
        "note_instructions",
        cfg.note_instructions,
        lambda r: (str(r["id"]), prompts.note_qa_messages(r["note"], r["instruction"]), r["answer_gpt35"]),
        fmt,
    )
    return tasks, counts


def draw_mix(tasks: Mapping[str, list[Row]], caps: Mapping[str, int], max_chars: int, seed: int) -> tuple[
    list[Row], dict[str, dict[str, int]]
]:  # fmt: skip
    """At most ``caps[task]`` rows per task, seeded and independent of file order, leaving out rows longer than
    ``max_chars`` (prompt + completion); returns the rows, shuffled together, and per-task counts."""
    chosen: list[Row] = []
    report: dict[str, dict[str, int]] = {}
    for task, rows in tasks.items():
        fitting = [r for r in rows if len(r["prompt"]) + len(r["completion"]) <= max_chars]
        fitting.sort(key=lambda r: _key(r["id"], r["completion"]))
        random.Random(_key(str(seed), task)).shuffle(fitting)
        cap = caps.get(task, 0)
        chosen.extend(fitting[:cap])
        report[task] = {"candidates": len(rows), "fit": len(fitting), "chosen": min(cap, len(fitting))}
    chosen.sort(key=lambda r: _key(r["id"]))
    random.Random(seed).shuffle(chosen)
    return chosen, report
