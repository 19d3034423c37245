"""``prepare``: medical MCQ rows → ``{prompt, completion}`` training rows, decontaminated and split.

Every prompt comes from :func:`medgpt.prompts.mcq_training_example` rendered in the base model's chat template
(:mod:`medgpt.templates`, resolved from the base GGUF as the gateway resolves it), so the model is trained on exactly
the bytes it is later asked with.

Decisions (and why):
- The analysis is the row's explanation, cleaned: MedMCQA explanations often start with an answer key
  ("Ans-a.", "Answer- A.", "Ans. is 'b' i.e., ...") that uses lower-case letters and gives the answer away before
  any reasoning; it is removed. Long explanations are cut at a sentence boundary (``max_analysis_chars``) because
  every analysis token costs CPU time in training and at inference.
- Rows without an explanation (47 % of the MedMCQA pool) get a one-line template analysis naming the answer
  (``missing_explanation: template``) rather than being dropped: they still teach the output format and the
  answer, and the short analysis keeps the model fast. ``drop`` keeps only rows with real reasoning.
- Contamination: a training row is dropped when its question, normalised (case, punctuation, whitespace), equals
  an evaluation question, or when most of its word n-grams appear in one evaluation question (near-duplicates:
  the same vignette with a changed age or a trailing phrase).
- The split is seeded and independent of file order (rows are sorted by a content hash before shuffling).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.config import DataConfig
from medgpt.prompts import mcq_training_example
from medgpt.templates import NAMED_FORMATS, ChatTemplate, named

# --- reading and hashing ---------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- text normalisation and the contamination check ------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Lower-case, Unicode-compatibility-folded, punctuation-free, single-spaced text (for matching only)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def word_ngrams(normalized: str, n: int) -> set[tuple[str, ...]]:
    words = normalized.split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@dataclass
class ContaminationIndex:
    """Evaluation questions, indexed for exact (normalised) and near-duplicate (n-gram overlap) look-ups.

    Overlap is measured against the *smaller* of the two n-gram sets, so a training question that contains an
    evaluation question (or is contained in one) counts as a near-duplicate.
    """

    n: int = 8
    threshold: float = 0.5
    exact: set[str] = field(default_factory=set)
    _ngram_owners: dict[tuple[str, ...], list[int]] = field(default_factory=lambda: defaultdict(list))
    _sizes: list[int] = field(default_factory=list)

    def add(self, question: str) -> None:
        norm = normalize_text(question)
        if not norm:
            return
        self.exact.add(norm)
        grams = word_ngrams(norm, self.n)
        idx = len(self._sizes)
        self._sizes.append(len(grams))
        for gram in grams:
            self._ngram_owners[gram].append(idx)

    def __len__(self) -> int:
        return len(self._sizes)

    def match(self, question: str) -> str | None:
        """``"exact"``, ``"near"`` or None."""
        norm = normalize_text(question)
        if norm in self.exact:
            return "exact"
        grams = word_ngrams(norm, self.n)
        if not grams:
            return None
        shared: dict[int, int] = defaultdict(int)
        for gram in grams:
            for owner in self._ngram_owners.get(gram, ()):
                shared[owner] += 1
        for owner, count in shared.items():
            if count / min(len(grams), self._sizes[owner]) >= self.threshold:
                return "near"
        return None


def eval_questions(path: Path) -> Iterator[str]:
    """Questions of an evaluation file (MedQA and PubMedQA rows both carry ``question``)."""
    for row in read_jsonl(path):
        if row.get("question"):
            yield row["question"]


def build_contamination_index(
    paths: Iterable[Path], n: int = 8, threshold: float = 0.5
) -> ContaminationIndex:
    index = ContaminationIndex(n=n, threshold=threshold)
    for path in paths:
        for question in eval_questions(path):
            index.add(question)
    return index


# --- analyses --------------------------------------------------------------------------------------------------

_ANSWER_KEY = re.compile(
    r"""^\s*(?:
        (?:ans(?:wer)?s?\b\.?\s*(?:is\s*)?[-:.]?\s*(?:option\s*)?[('"]?\s*[a-e]\b\s*[)'"]?  # Ans-a / Answer: B / Ans. is 'c'
           (?:\s*(?:i\.?\s?e\.?|ie)\b[.,:]?)?)                                          # ... i.e.,
      | (?:\(?[a-e]\)\s)                                                                # "(a) " / "a) "
    )[\s.,:;-]*""",
    re.IGNORECASE | re.VERBOSE,
)


def clean_explanation(text: str | None, max_chars: int) -> str | None:
    """The explanation as an analysis: answer key removed, whitespace collapsed, cut at a sentence end.

    Returns None when nothing useful is left (empty, or only the answer key).
    """
    if not text:
        return None
    text = " ".join(text.split())
    text = _ANSWER_KEY.sub("", text, count=1).strip()
    # "<" would let the analysis close its own tag early (and the gateway's grammar forbids it inside the analysis)
    text = text.replace("<", "‹").replace(">", "›")
    if len(text) < 15:
        return None
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
    if end >= max_chars // 3:
        return cut[: end + 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut).rstrip(" ,;:") + "…"


def template_analysis(options: Mapping[str, str], answer: str) -> str:
    """The analysis for a row without an explanation: short and honest (it states, it does not invent reasons)."""
    return f"The best answer is {answer}, {options[answer].strip()}."


# --- rows → training examples -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MCQ:
    id: str
    question: str
    options: dict[str, str]
    answer: str
    explanation: str | None
    source: str


def mcq_from_row(row: Mapping[str, Any], source: str) -> MCQ | None:
    """A MedMCQA/MedQA-shaped row (question, options, answer_idx, explanation?) or None when it is malformed."""
    question = (row.get("question") or "").strip()
    options = {str(k): str(v).strip() for k, v in (row.get("options") or {}).items() if str(v).strip()}
    answer = str(row.get("answer_idx") or "").strip().upper()
    if not question or len(options) < 2 or answer not in options:
        return None
    rid = str(row.get("id") or hashlib.sha1(question.encode()).hexdigest()[:16])
    return MCQ(rid, question, options, answer, row.get("explanation") or row.get("exp"), source)


_MR_QUESTION = re.compile(r"###\s*Question:\s*(.*?)\s*###\s*Options:\s*(.*)", re.DOTALL | re.IGNORECASE)
_MR_OPTION = re.compile(r"^\s*([A-E])[.)]\s*(.+?)\s*$", re.MULTILINE)
_MR_RATIONALE = re.compile(r"###\s*Rationale:\s*(.*?)\s*###\s*Answer:\s*(.*)", re.DOTALL | re.IGNORECASE)
_MR_LETTER = re.compile(r"\b(?:option\s+)?([A-E])\b")


def mcq_from_reasoning_row(row: Mapping[str, Any], source: str, index: int) -> MCQ | None:
    """A ``mamachang/medical-reasoning`` style row: ``input`` holds "###Question: … ###Options: A. …" and
    ``output`` "###Rationale: … ###Answer: OPTION C IS CORRECT." Rows of another shape return None."""
    if {"question", "options", "answer_idx"} <= set(row):
        return mcq_from_row(row, source)
    qm = _MR_QUESTION.search(str(row.get("input") or ""))
    rm = _MR_RATIONALE.search(str(row.get("output") or ""))
    if not qm or not rm:
        return None
    options = {k: v for k, v in _MR_OPTION.findall(qm.group(2))}
    letter = _MR_LETTER.search(rm.group(2).upper())
    if len(options) < 2 or not letter or letter.group(1) not in options:
        return None
    return MCQ(
        f"{source}:{index}", qm.group(1).strip(), options, letter.group(1), rm.group(1).strip(), source
    )


def row_template(data_cfg: DataConfig, template: ChatTemplate | str | None) -> ChatTemplate:
    """The template rows are rendered in: the one given (resolved from the base GGUF by the caller), else the
    config's ``prompt_format`` when it is a named format. ``auto``/``gguf`` need the GGUF's own template, which only
    the caller (with the base GGUF at hand) can resolve."""
    if isinstance(template, ChatTemplate):
        return template
    fmt = template or data_cfg.prompt_format
    if fmt not in NAMED_FORMATS:
        raise ValueError(
            f"prompt_format {fmt!r} is read from the base GGUF: pass its template "
            "(finetune.base_model.base_template) or set a named format"
        )
    return named(fmt)


def example_from_mcq(
    mcq: MCQ, data_cfg: DataConfig, template: ChatTemplate | str | None = None
) -> dict[str, Any] | None:
    """The training row for ``mcq`` in the model's ``template`` (default: the config's named ``prompt_format``),
    or None when it has no usable explanation and those are dropped."""
    analysis = clean_explanation(mcq.explanation, data_cfg.max_analysis_chars)
    has_explanation = analysis is not None
    if analysis is None:
        if data_cfg.missing_explanation == "drop":
            return None
        analysis = template_analysis(mcq.options, mcq.answer)
    ex = mcq_training_example(
        mcq.question, mcq.options, mcq.answer, analysis, row_template(data_cfg, template)
    )
    return {
        "id": mcq.id,
        "source": mcq.source,
        "prompt": ex["prompt"],
        "completion": ex["completion"],
        "answer": mcq.answer,
        "options": mcq.options,
        "has_explanation": has_explanation,
    }


# --- the split ---------------------------------------------------------------------------------------------------


def _content_key(row: Mapping[str, Any]) -> str:
    return hashlib.sha256((row["prompt"] + row["completion"]).encode()).hexdigest()


def split_rows(
    rows: list[dict[str, Any]], val_fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded train/validation split, independent of the order ``rows`` come in."""
    ordered = sorted(rows, key=_content_key)
    random.Random(seed).shuffle(ordered)
    n_val = round(len(ordered) * val_fraction)
    if val_fraction > 0 and len(ordered) > 1:
        n_val = min(max(n_val, 1), len(ordered) - 1)
    return ordered[n_val:], ordered[:n_val]


def write_split(
    rows: list[dict[str, Any]], val_fraction: float, seed: int, out_dir: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """:func:`split_rows`, written as ``train.jsonl`` and ``val.jsonl`` in ``out_dir``."""
    train, val = split_rows(rows, val_fraction, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "val.jsonl", val)
    return train, val


# --- the stage ---------------------------------------------------------------------------------------------------


def _load_hf_dataset(name: str, split: str) -> list[dict[str, Any]]:
    """Optional extra data from the Hugging Face hub (only when one is reachable; never the default)."""
    from datasets import load_dataset

    return [dict(r) for r in load_dataset(name, split=split)]


def prepare_mix(
    data_cfg: DataConfig, seed: int, out_dir: Path, template: ChatTemplate | str | None = None
) -> dict[str, Any]:
    """The multi-task mix (finetune/mixture.py): every mode the gateway serves, capped per task, split and written
    like :func:`prepare`'s MCQ rows, with the per-task counts in the manifest."""
    from finetune.mixture import draw_mix, task_rows

    template = row_template(data_cfg, template)
    index = build_contamination_index(data_cfg.eval_files, data_cfg.ngram, data_cfg.near_duplicate_threshold)
    excluded = [
        row.get("text") or row.get("note") or row.get("transcription") or ""
        for path in data_cfg.eval_text_files
        for row in read_jsonl(path)
    ]
    tasks, counts = task_rows(data_cfg, index, seed, excluded, template)
    rows, per_task = draw_mix(tasks, data_cfg.mix or {}, data_cfg.max_chars, seed)
    if not rows:
        raise ValueError("prepare: the mix is empty (every task capped at 0, or no row fits max_chars)")
    train, val = write_split(rows, data_cfg.val_fraction, seed, out_dir)
    sources = [data_cfg.mts_dialog, data_cfg.aci_bench, data_cfg.meqsum, data_cfg.mtsamples, data_cfg.pubmedqa,
               data_cfg.note_instructions, *data_cfg.train_files]  # fmt: skip
    manifest = {
        "seed": seed,
        "mix": per_task,
        "mcq_pool": counts,
        "sources": [{"path": str(p), "sha256": sha256_file(p)} for p in sources],
        "eval_files": [{"path": str(p), "sha256": sha256_file(p)} for p in data_cfg.eval_files],
        "eval_text_files": [str(p) for p in data_cfg.eval_text_files],
        "train_rows": len(train),
        "val_rows": len(val),
        "train_tasks": {t: sum(r["task"] == t for r in train) for t in per_task},
        "train_sha256": sha256_file(out_dir / "train.jsonl"),
        "val_sha256": sha256_file(out_dir / "val.jsonl"),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def prepare(
    data_cfg: DataConfig, seed: int, out_dir: Path, template: ChatTemplate | str | None = None
) -> dict[str, Any]:
    """Read, clean, decontaminate, format and split; write ``train.jsonl``, ``val.jsonl`` and ``manifest.json``
    into ``out_dir`` and return the manifest (counts, file hashes, the dropped rows' ids). Prompts are rendered in
    the base model's ``template`` (resolved from the base GGUF by the pipeline; default: the config's named
    ``prompt_format``). With ``mix`` set, the multi-task mix instead (:func:`prepare_mix`)."""
    template = row_template(data_cfg, template)
    if data_cfg.mix is not None:
        return prepare_mix(data_cfg, seed, out_dir, template)
    from tqdm import tqdm

    index = build_contamination_index(data_cfg.eval_files, data_cfg.ngram, data_cfg.near_duplicate_threshold)
    mcqs: list[MCQ] = []
    malformed = 0
    sources: list[dict[str, Any]] = []
    for path in data_cfg.train_files:
        rows = read_jsonl(path)
        sources.append({"path": str(path), "sha256": sha256_file(path), "rows": len(rows)})
        for row in rows:
            mcq = mcq_from_row(row, source=path.name)
            malformed += mcq is None
            if mcq is not None:
                mcqs.append(mcq)
    if data_cfg.hf_dataset:
        hf_rows = _load_hf_dataset(data_cfg.hf_dataset, data_cfg.hf_split)
        sources.append({"hf_dataset": data_cfg.hf_dataset, "split": data_cfg.hf_split, "rows": len(hf_rows)})
        for i, row in enumerate(hf_rows):
            mcq = mcq_from_reasoning_row(row, data_cfg.hf_dataset, i)
            malformed += mcq is None
            if mcq is not None:
                mcqs.append(mcq)

    contaminated: dict[str, list[str]] = {"exact": [], "near": []}
    no_explanation_dropped = 0
    seen: set[str] = set()
    duplicates = 0
    examples: list[dict[str, Any]] = []
    for mcq in tqdm(mcqs, desc="prepare", unit="row", mininterval=2):
        hit = index.match(mcq.question)
        if hit:
            contaminated[hit].append(mcq.id)
            continue
        key = normalize_text(mcq.question) + "\x00" + normalize_text(" ".join(mcq.options.values()))
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        ex = example_from_mcq(mcq, data_cfg, template)
        if ex is None:
            no_explanation_dropped += 1
            continue
        examples.append(ex)

    if data_cfg.max_rows is not None and len(examples) > data_cfg.max_rows:
        examples = sorted(examples, key=_content_key)
        random.Random(seed).shuffle(examples)
        examples = examples[: data_cfg.max_rows]
    if not examples:
        raise ValueError("prepare: no training rows left after cleaning and the contamination check")
    train, val = write_split(examples, data_cfg.val_fraction, seed, out_dir)
    manifest = {
        "seed": seed,
        "sources": sources,
        "eval_files": [{"path": str(p), "sha256": sha256_file(p)} for p in data_cfg.eval_files],
        "eval_questions_indexed": len(index),
        "rows_read": len(mcqs) + malformed,
        "malformed": malformed,
        "duplicates": duplicates,
        "contaminated_exact": contaminated["exact"],
        "contaminated_near": contaminated["near"],
        "no_explanation_dropped": no_explanation_dropped,
        "with_explanation": sum(r["has_explanation"] for r in examples),
        "train_rows": len(train),
        "val_rows": len(val),
        "train_sha256": sha256_file(out_dir / "train.jsonl"),
        "val_sha256": sha256_file(out_dir / "val.jsonl"),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
