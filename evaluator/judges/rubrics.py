"""The judges' prompts: a reference-guided MCQ rubric (0 when a tag is missing, 1-5 against the ground truth,
JSON ``{score, explanation}``), a faithfulness rubric for summaries, and a reference-free rubric for
open questions (the MEDIQA questions come without reference answers, so the judge grades from its own medical
knowledge: only a strong judge makes that score mean anything).

They live here, not in ``medgpt.prompts``, because they are sent to judges, never to the models MedGPT serves.
"""

from __future__ import annotations

from medgpt.prompts import Message, format_options

#: JSON schema of a verdict; ``score`` first so a judge that runs out of tokens in its explanation still
#: scored.
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "enum": [0, 1, 2, 3, 4, 5]},
        "explanation": {"type": "string"},
    },
    "required": ["score", "explanation"],
}

JUDGE_SYSTEM = (
    "You are a strict medical examiner grading answers against a ground truth. You reply with one JSON "
    'object and nothing else, with two keys: "score" (an integer from 0 to 5) and "explanation" (one or two '
    "sentences saying why)."
)

MCQ_RUBRIC = (
    "Grade the candidate's answer to the multiple-choice medical question below against the ground truth.\n\n"
    "The candidate must write its reasoning inside <analysis></analysis> and its final option inside "
    "<answer></answer>.\n\n"
    """Scoring:
- 0: the <analysis> or the <answer> tag is missing.
- 5: the chosen option is the ground truth and the reasoning is medically sound and supports it.
- 4: the chosen option is the ground truth; the reasoning is mostly sound with minor gaps or errors.
- 3: the chosen option is the ground truth but the reasoning is weak, irrelevant or wrong.
- 2: the chosen option is wrong, but the reasoning is partly correct.
- 1: the chosen option is wrong and the reasoning is wrong or irrelevant.

### Question:
{question}

### Options:
{options}

### Ground truth:
{truth}

### Candidate's answer:
{candidate}

Reply with the JSON object only."""
)

SUMMARY_RUBRIC = (
    "Grade the candidate summary of the clinical text below for faithfulness, using the reference summary\n"
    "written by a clinician as the ground truth for what matters.\n\n"
    """Scoring:
- 0: the candidate summary is empty or is not a summary (for example, it copies the text or is off topic).
- 5: every statement is supported by the text and the key points of the reference are covered.
- 4: every statement is supported by the text; some key points of the reference are missing.
- 3: mostly supported, with one unsupported or inaccurate detail, or most key points missing.
- 2: several unsupported or inaccurate statements.
- 1: mostly unsupported, contradicts the text, or invents findings, drugs or doses.

### Clinical text:
{text}

### Reference summary:
{reference}

### Candidate summary:
{candidate}

Reply with the JSON object only."""
)


def mcq_judge_messages(question: str, options: dict[str, str], truth: str, candidate: str) -> list[Message]:
    content = MCQ_RUBRIC.format(
        question=question.strip(), options=format_options(options), truth=truth, candidate=candidate.strip()
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}]


def summary_judge_messages(text: str, reference: str, candidate: str) -> list[Message]:
    content = SUMMARY_RUBRIC.format(
        text=text.strip(), reference=reference.strip(), candidate=candidate.strip()
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}]


OPEN_RUBRIC = (
    "Grade the candidate's answer to the medical question below. There is no reference answer: judge it from "
    "established medical knowledge.\n\n"
    """Scoring:
- 0: the answer is empty, repeats the question or itself, or does not answer the question.
- 5: accurate, relevant and complete enough to be useful; says when the question cannot be answered without an
  examination.
- 4: accurate and relevant, with minor omissions.
- 3: mostly accurate, with one notable error or an important omission.
- 2: several inaccuracies, or largely incomplete.
- 1: mostly wrong, misleading or unsafe.

### Question:
{question}

### Candidate's answer:
{candidate}

Reply with the JSON object only."""
)


def open_judge_messages(question: str, candidate: str) -> list[Message]:
    content = OPEN_RUBRIC.format(question=question.strip(), candidate=candidate.strip())
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}]
