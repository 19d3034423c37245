"""Rule-based de-identification of clinical text before it is sent to an external judge.

Why rule-based: the maintained libraries do not work on a machine without a model hub. Presidio needs a spaCy
model (``en_core_web_lg``, distributed outside PyPI); scrubadub finds names only through
spaCy/TextBlob/Stanford add-ons whose models are downloaded at run time; philter-lite tags parts of speech
with NLTK data that is downloaded at run time too. What is left is what Philter itself is built on: patterns
plus context cues, conservative by design (scrubbing a clinical word by mistake costs a little judge accuracy;
leaking a name costs far more).

What is removed (HIPAA Safe Harbor categories that occur in free text): names, dates (every element but the
year), phone/fax numbers, e-mail addresses, URLs and IP addresses, social security / medical record / account
/ other identifying numbers, street addresses, city-state-ZIP lines, and ages over 89 (replaced by "90+").

How names are found: a capitalised word only counts as a name next to a cue: a title (Dr., Mrs.), a label
("Patient:", "Signed by:"), a credential ("MD", "RN"), a greeting in a dialogue ("hi, brian"), or "my name
is". Every word of a name found that way is then removed everywhere else in the same text, in any case, which
catches "Mr. John Smith ... Smith denies ..." and ACI-Bench's lowercased dialogue. A name that never appears
next to a cue is NOT found: that is the known limit of this scrubber, and why an external judge is opt-in.

Kept on purpose: ages up to 89, years on their own, doses, vital signs ("120/80"), lab values, clinical terms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|"
    r"Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_NAME_WORD = r"[A-Z][a-zA-Z'\-]+"
#: Words of one name are separated by single spaces: a run of spaces or a newline ends a name in a form-like
#: note.
_FULL_NAME = rf"{_NAME_WORD}(?: [A-Z]\.)?(?: {_NAME_WORD}){{0,2}}"

#: (label, pattern) in the order they are applied; earlier matches are replaced before later patterns run.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("EMAIL", re.compile(r"\b[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+\b")),
    ("URL", re.compile(r"\b(?:https?://|www\.)\S+", re.I)),
    ("IP", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")),
    ("SSN", re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),
    (
        "ID",
        re.compile(
            r"(?i:\b(?:MRN|medical\s+record(?:\s+(?:number|no\.?|#))?|record\s+(?:number|no\.?|#)|"
            r"acct\.?|account(?:\s+(?:number|no\.?|#))?|patient\s+id|member\s+id|insurance\s+id|policy(?:\s+number)?|"
            r"encounter(?:\s+(?:number|id))?|chart(?:\s+(?:number|no\.?))?|ID|SSN))"
            r"(\s*(?:[:#]\s*[:#]?|is|number)?\s*)(?=[A-Z0-9\-/]*\d)[A-Z0-9][A-Z0-9\-/]{3,}\b"
        ),
    ),
    (
        "PHONE",
        re.compile(
            r"(?<![\w/])(?:\+?1[\s.\-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.\-])\d{3}[\s.\-]\d{4}\b(?:\s*(?:x|ext\.?)\s*\d{1,5})?",
            re.I,
        ),
    ),
    ("DATE", re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}\b")),
    ("DATE", re.compile(r"\b\d{1,2}[/\-.]\d{1,2}[/\-.](?:\d{4}|\d{2})\b")),
    ("DATE", re.compile(rf"\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b")),
    ("DATE", re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?(?:,?\s+\d{{4}})?\b")),
    ("DATE", re.compile(rf"\b{_MONTH}\.?,?\s+\d{{4}}\b")),
    (
        "ADDRESS",
        re.compile(
            r"\b\d{1,6}\s+(?:[A-Z][a-zA-Z]*\.?\s+){1,4}"
            r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
            r"Circle|Cir|Highway|Hwy|Parkway|Pkwy)\b\.?(?:,?\s*(?:Apt|Apartment|Suite|Ste|Unit|#)\.?\s*[\w\-]+)?"
        ),
    ),
    ("ADDRESS", re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d+\b", re.I)),
    ("ADDRESS", re.compile(r"\b[A-Z][a-zA-Z]+(?:\s[A-Z][a-zA-Z]+){0,2},\s*[A-Z]{2}\s+\d{5}(?:-\d{4})?\b")),
    ("ID", re.compile(r"\b[A-Z]{1,3}\d{5,}\b")),
    ("ID", re.compile(r"(?<![\d.,])\d{7,}(?![\d.,])")),
]

_AGE_OVER_89 = re.compile(r"\b(9\d|1[0-4]\d)(?=(?:-|\s)?(?:year|yr|y/?o\b|years?\s+old))", re.I)

#: Cues that make the capitalised words next to them a name.
_NAME_CUES: list[re.Pattern[str]] = [
    re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?\s+(?P<name>{_FULL_NAME})"),
    re.compile(
        r"(?i:\b(?:patient(?:\s+name)?|name|pt|attending|physician|provider|surgeon|referring(?:\s+physician)?|"
        r"primary\s+care(?:\s+physician)?|pcp|signed\s+by|electronically\s+signed\s+by|dictated\s+by|"
        r"transcribed\s+by|cc|nurse|contact|emergency\s+contact|wife|husband|son|daughter|mother|father))"
        rf"\s*:\s*(?P<name>{_FULL_NAME})"
    ),
    re.compile(
        rf"(?P<name>{_NAME_WORD}(?:\s+[A-Z]\.)?\s+{_NAME_WORD}),?\s+(?:MD|M\.D\.|DO|RN|NP|PA-C|PhD|DDS)\b"
    ),
    re.compile(r"(?i:\bmy\s+name\s+is)\s+(?P<name>[A-Za-z][a-zA-Z'\-]+(?:\s+[A-Za-z][a-zA-Z'\-]+)?)"),
    re.compile(
        r"(?i:\b(?:hi|hello|hey|good\s+(?:morning|afternoon|evening)|thank\s+you|thanks|bye|goodbye)\s*,?\s+)"
        r"(?P<name>[A-Za-z][a-zA-Z'\-]{2,})\b"
    ),
]

#: Words a cue can capture that are not names (greetings to roles, pronouns, common sentence starters).
_NOT_NAMES = frozenset(
    """there doctor doc everyone everybody all guys folks sir madam maam ma'am dear nurse again so much very
    for you yes no okay ok the a an and or but it this that then now well how good great nice thanks thank
    patient patients pt name unknown none not today tomorrow yesterday morning afternoon evening night again
    he she they we i me my his her their our your who what when where which whom is was are were be been
    male female man woman boy girl mother father son daughter wife husband md rn do np dr mr mrs ms
    hospital clinic history physical exam examination assessment plan diagnosis medications allergies
    mrn dob ssn id phone fax email address""".split()
)


@dataclass
class ScrubResult:
    text: str
    #: (category, count) for every category found; the identifiers themselves are never kept.
    counts: dict[str, int] = field(default_factory=dict)


def _names(text: str) -> tuple[set[str], list[tuple[int, int]]]:
    """Name words found next to a cue, and the spans of the names themselves (initials included)."""
    found: set[str] = set()
    spans: list[tuple[int, int]] = []
    for cue in _NAME_CUES:
        for m in cue.finditer(text):
            words = [w.strip(".,'") for w in m.group("name").split(" ")]
            kept = [w for w in words if len(w) >= 2 and w.lower() not in _NOT_NAMES]
            if not kept:
                continue
            found.update(kept)
            # Trim leading/trailing non-name words (e.g. "Thanks, doctor") off the span.
            start, end = m.span("name")
            name = m.group("name")
            while name and name.split(" ")[-1].strip(".,'").lower() in _NOT_NAMES:
                name = name.rsplit(" ", 1)[0] if " " in name else ""
            spans.append((start, start + len(name)))
    return found, spans


def _replace_spans(text: str, spans: list[tuple[int, int]], placeholder: str) -> tuple[str, int]:
    merged: list[list[int]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in reversed(merged):
        text = text[:start] + placeholder + text[end:]
    return text, len(merged)


def scrub(text: str) -> ScrubResult:
    """Replace identifiers in ``text`` with ``[CATEGORY]`` placeholders; see the module docstring for what."""
    counts: dict[str, int] = {}

    def count(label: str, n: int) -> None:
        if n:
            counts[label] = counts.get(label, 0) + n

    names, spans = _names(text)  # before anything is replaced, so the cues are still intact
    text, n = _replace_spans(text, spans, "[NAME]")
    count("NAME", n)
    for label, pattern in _PATTERNS:
        if label == "ID" and pattern.groups:
            text, n = pattern.subn(lambda m: m.group(0)[: m.end(1) - m.start(0)] + "[ID]", text)
        else:
            text, n = pattern.subn(f"[{label}]", text)
        count(label, n)
    text, n = _AGE_OVER_89.subn("90+", text)
    count("AGE", n)
    if names:
        alternation = "|".join(re.escape(w) for w in sorted(names, key=len, reverse=True))
        text, n = re.subn(rf"(?<![\w\[])(?:{alternation})(?![\w\]])", "[NAME]", text, flags=re.I)
        count("NAME", n)
    return ScrubResult(text, counts)


def scrub_text(text: str) -> str:
    return scrub(text).text
