"""Every prompt MedGPT sends to a model, in one place.

The gateway (api), the fine-tuning data builder (finetune) and the evaluator all import this module, so the text a
model is trained on is byte for byte the text it is later asked with. Change a prompt here and all three follow.

Messages are plain ``{"role", "content"}`` dicts (OpenAI style) so chat engines (Ollama, OpenAI-compatible) take
them as they are. How a model's messages become its prompt string (its chat template: the GGUF's own, or a named
format such as Gemma's turns) is :mod:`medgpt.templates`; training rows are rendered with the same template the
model is served with (:func:`training_example`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from medgpt.templates import ChatTemplate, Message, named

SummaryStyle = Literal["brief", "bullets", "soap"]
#: The three ways ``/ask`` answers (each with its own prompt below).
AskMode = Literal["mcq", "note_qa", "open"]

SYSTEM = (
    "You are MedGPT, a careful medical assistant for clinicians. Answer from established medical knowledge and "
    "from the text you are given; say so when the text does not contain the answer. This is decision support, "
    "not a diagnosis."
)

#: The delimiters our prompts wrap the user's text in. An answer never contains them; a model that writes them is
#: continuing the prompt document instead of answering (what the base model does), which counts as an echo.
PROMPT_MARKERS = ("[Text Begin]", "[Text End]", "[Note Begin]", "[Note End]", "[Instruction Begin]",
                  "[Instruction End]")  # fmt: skip

# --- medical multiple-choice reasoning -------------------------------------------------------------------------

MCQ_INSTRUCTION = (
    "Answer the following multiple-choice medical question. First reason step by step inside "
    "<analysis></analysis>, then give exactly one option as <answer>LETTER: option text</answer>."
)


def format_options(options: Mapping[str, str]) -> str:
    return "\n".join(f"{key}. {text}" for key, text in options.items())


def mcq_user_content(question: str, options: Mapping[str, str]) -> str:
    return f"{MCQ_INSTRUCTION}\n\n### Question:\n{question.strip()}\n\n### Options:\n{format_options(options)}"


def mcq_messages(question: str, options: Mapping[str, str]) -> list[Message]:
    """The inference prompt: the instruction, the question and the lettered options in one user turn."""
    return [{"role": "user", "content": mcq_user_content(question, options)}]


def mcq_target(analysis: str, choice: str, options: Mapping[str, str]) -> str:
    """The completion a fine-tuned model is taught to write: ``<analysis>…</analysis>`` then ``<answer>X: text</answer>``."""
    return f"<analysis>{analysis.strip()}</analysis>\n<answer>{choice}: {options[choice]}</answer>"


def mcq_training_example(
    question: str, options: Mapping[str, str], answer: str, analysis: str, template: ChatTemplate | str = "gemma"
) -> dict[str, str]:
    """One supervised MCQ row as ``{prompt, completion}``.

    ``prompt`` is exactly what the model's template renders for :func:`mcq_messages`, so training and inference
    see the same bytes; ``completion`` ends with the turn terminator so the model learns to stop.
    """
    return training_example(mcq_messages(question, options), mcq_target(analysis, answer, options), template)


def training_example(
    messages: Sequence[Message], target: str, template: ChatTemplate | str = "gemma"
) -> dict[str, str]:
    """One supervised row for any mode: ``prompt`` is the serving messages rendered in the model's ``template`` (a
    :class:`~medgpt.templates.ChatTemplate` or a named format; the bytes the model is asked with, BOS left to the
    tokenizer), ``completion`` the target followed by the template's end of turn, so the model learns to stop."""
    template = named(template) if isinstance(template, str) else template
    return {"prompt": template.training_prompt(messages), "completion": target.strip() + template.stop[0]}


@dataclass(frozen=True)
class ParsedMCQ:
    analysis: str
    choice: str | None  # an option key, or None when the output names none
    answer: str  # "C: option text" as written by the model (normalised to the option text when parsed)
    well_formed: bool  # both tags present and the answer parses to an option


_ANALYSIS = re.compile(r"<analysis>(.*?)(?:</analysis>|$)", re.DOTALL)
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*(?:</answer>|$)", re.DOTALL)


def parse_choice(text: str, options: Mapping[str, str]) -> str | None:
    """Find the option key a short answer text names: a leading letter ("C", "C:", "(C)") or an exact option text."""
    text = text.strip()
    m = re.match(r"^\(?([A-Za-z])\)?(?:[:.)\s]|$)", text)
    if m and m.group(1).upper() in options:
        return m.group(1).upper()
    lowered = text.lower().rstrip(".")
    for key, option in options.items():
        if lowered == option.strip().lower().rstrip("."):
            return key
    return None


def _normalized_words(text: str) -> str:
    return " " + " ".join(re.findall(r"\w+", text.lower())) + " "


def option_named(analysis: str, options: Mapping[str, str]) -> str | None:
    """The key of the one option whose text the analysis names (whole words, case-insensitive), or None when it
    names none or several. Options without a word of 4+ characters ("No", "IV") are never matched: too common."""
    text = _normalized_words(analysis)
    named = [
        key
        for key, option in options.items()
        if re.search(r"\w{4,}", option) and _normalized_words(option) in text
    ]
    return named[0] if len(named) == 1 else None


def parse_mcq(text: str, options: Mapping[str, str]) -> ParsedMCQ:
    """Parse ``<analysis>…</analysis><answer>X: …</answer>``; never invents a choice."""
    analysis_m = _ANALYSIS.search(text)
    answer_m = _ANSWER.search(text)
    analysis = analysis_m.group(1).strip() if analysis_m else ""
    choice = parse_choice(answer_m.group(1), options) if answer_m else None
    well_formed = bool(
        analysis_m and "</analysis>" in text and answer_m and "</answer>" in text and choice is not None
    )
    answer = f"{choice}: {options[choice]}" if choice else ""
    return ParsedMCQ(analysis=analysis, choice=choice, answer=answer, well_formed=well_formed)


def _gbnf_char(ch: str) -> str:
    """One character inside a GBNF string literal: printable ASCII as itself (quote and backslash escaped),
    everything else by code point (``\\xXX``, ``\\uXXXX``, ``\\UXXXXXXXX``, which llama.cpp's grammar parser
    reads). A raw NUL ends the C string llama.cpp parses, so the grammar fails to parse; raw control characters,
    and non-ASCII written as bytes, depend on the parser; by code point they are always exact."""
    if ch in '"\\':
        return "\\" + ch
    code = ord(ch)
    if 0x20 <= code < 0x7F:
        return ch
    if code <= 0xFF:
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"


def _gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal that matches exactly ``text``, whatever characters it holds."""
    return '"' + "".join(_gbnf_char(ch) for ch in text) + '"'


def mcq_grammar(options: Mapping[str, str]) -> str:
    """GBNF that makes a llama.cpp model write the MCQ format with a choice among ``options`` only.

    The analysis may not contain '<', so it can only end by closing the tag; the answer is one of the options
    verbatim. A model that runs out of tokens inside the analysis is rescued by :func:`forced_choice_messages`.

    Every character of an option is escaped (:func:`_gbnf_literal`), except NUL, which is left out: llama.cpp
    rejects every token whose text starts with NUL under a grammar, so an option spelled with one could never be
    finished; the answer is read by its letter (:func:`parse_choice`), so nothing is lost.
    """
    alternatives = " | ".join(_gbnf_literal(f"{k}: {v}".replace("\x00", "")) for k, v in options.items())
    return (
        'root ::= "<analysis>" analysis "</analysis>\\n<answer>" choice "</answer>"\n'
        "analysis ::= [^<]+\n"
        f"choice ::= {alternatives}\n"
    )


def forced_choice_messages(
    question: str, options: Mapping[str, str], analysis: str
) -> tuple[list[Message], dict]:
    """A follow-up asking only for the option key, with a JSON schema that allows nothing else.

    Used when the first answer did not name an option (ran out of tokens, or an engine without grammars).
    """
    messages = mcq_messages(question, options)
    if analysis:
        messages.append({"role": "assistant", "content": f"<analysis>{analysis}</analysis>"})
    messages.append(
        {
            "role": "user",
            "content": 'Now give only the letter of the single best option as JSON: {"choice": "LETTER"}.',
        }
    )
    schema = {
        "type": "object",
        "properties": {"choice": {"type": "string", "enum": list(options)}},
        "required": ["choice"],
    }
    return messages, schema


# --- note question answering (Asclepius style) -------------------------------------------------------------------

NOTE_QA_TEMPLATE = (
    "You are an intelligent clinical language model.\n"
    "Below is a snippet of a patient's clinical note and a following instruction from a healthcare professional.\n"
    "Write a response that appropriately completes the instruction.\n"
    "The response should provide the accurate answer to the instruction, while being concise.\n\n"
    "[Note Begin]\n{note}\n[Note End]\n\n"
    "[Instruction Begin]\n{question}\n[Instruction End]"
)


def note_qa_messages(note: str, question: str) -> list[Message]:
    return [{"role": "user", "content": NOTE_QA_TEMPLATE.format(note=note.strip(), question=question.strip())}]


def note_qa_instruction() -> str:
    """The fixed part of the note-QA prompt (the template without note and question): what an echo copies."""
    return NOTE_QA_TEMPLATE.format(note="", question="")


#: PubMedQA-style questions are answered with the decision first ("Yes. …"), so the decision is always stated
#: and a reader (or the evaluator) finds it in the first word.
DECISIONS = ("yes", "no", "maybe")


def decision_answer(decision: str, explanation: str) -> str:
    """The answer format for a yes/no/maybe question about a text: the decision, then the supporting sentence(s)."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, not {decision!r}")
    return f"{decision.capitalize()}. {explanation.strip()}"


def parse_decision(text: str) -> str | None:
    """The yes/no/maybe an answer states: its first word, else the first such word of its first sentence."""
    words = re.findall(r"[a-z]+", text.lower()[:200])
    if words and words[0] in DECISIONS:
        return words[0]
    first_sentence = re.split(r"(?<=[.!?])\s", text.lower(), maxsplit=1)[0]
    found = re.findall(r"\b(yes|no|maybe)\b", first_sentence)
    return found[0] if found else None


def open_question_instruction() -> str:
    """The fixed part of the open-question prompt (everything but the question)."""
    return f"{SYSTEM}\n\nQuestion:"


def open_question_messages(question: str) -> list[Message]:
    return [{"role": "user", "content": f"{open_question_instruction()} {question.strip()}"}]


# --- summarization -----------------------------------------------------------------------------------------------

STYLE_INSTRUCTIONS: dict[str, str] = {
    "brief": "Summarize the clinical text below in a few sentences{limit}. Keep diagnoses, medications, doses and "
    "follow-up; do not add anything that is not in the text.",
    "bullets": "Summarize the clinical text below as a short bulleted list ('- ' per line){limit}. Keep diagnoses, "
    "medications, doses and follow-up; do not add anything that is not in the text.",
    "soap": "Summarize the clinical text below as a SOAP note with the headings Subjective:, Objective:, "
    "Assessment: and Plan:{limit}. Use only facts from the text; write 'not documented' for a missing section.",
}


#: The SOAP headings, in order; a section the text does not document is written as ``not documented``.
SOAP_HEADINGS = ("Subjective", "Objective", "Assessment", "Plan")


def soap_target(sections: Mapping[str, str]) -> str:
    """A SOAP note in the layout the ``soap`` style asks for, from ``{heading: text}`` (missing → not documented)."""
    return "\n".join(f"{h}: {sections.get(h, '').strip() or 'not documented'}" for h in SOAP_HEADINGS)


def bullets_target(text: str) -> str:
    """A text as the ``bullets`` style's list: one ``- `` line per sentence."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s.strip()]
    return "\n".join(f"- {s}" for s in sentences)


def _limit(max_words: int | None) -> str:
    return f" in at most {max_words} words" if max_words else ""


def summary_instruction(style: SummaryStyle = "brief", max_words: int | None = None) -> str:
    """The instruction of a summary prompt (everything but the text)."""
    return STYLE_INSTRUCTIONS[style].format(limit=_limit(max_words))


def summarize_messages(text: str, style: SummaryStyle = "brief", max_words: int | None = None) -> list[Message]:
    instruction = summary_instruction(style, max_words)
    return [{"role": "user", "content": f"{instruction}\n\n[Text Begin]\n{text.strip()}\n[Text End]"}]


def merge_summaries_messages(
    partials: Sequence[str], style: SummaryStyle = "brief", max_words: int | None = None
) -> list[Message]:
    """Reduce step for notes longer than the context: the partial summaries, in order, become one summary."""
    joined = "\n\n".join(f"[Part {i}]\n{p.strip()}" for i, p in enumerate(partials, 1))
    instruction = merge_instruction(style, max_words)
    return [{"role": "user", "content": f"{instruction}\n\n[Text Begin]\n{joined}\n[Text End]"}]


def merge_instruction(style: SummaryStyle = "brief", max_words: int | None = None) -> str:
    """The instruction of a merge prompt (everything but the partial summaries)."""
    return (
        "The text below is a series of summaries of consecutive parts of one clinical note. "
        + summary_instruction(style, max_words)
    )
