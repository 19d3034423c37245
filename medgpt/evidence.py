"""Evidence for note answers: the note's own sentences that support an answer, verbatim, with character offsets.

A clinician reading an answer about a note must be able to see where it came from, and the evidence must never be
text the note does not contain. So evidence is found by lexical retrieval over the note's sentences (BM25 from
``bm25s``), never generated: every span is cut from the note, and ``note[start:end] == text`` is checked before a
span leaves this module. Offsets count Unicode code points (Python string indices), the same as the JSON string the
note arrived in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import bm25s
import Stemmer
from bm25s.stopwords import STOPWORDS_EN_PLUS

#: Spans returned at most: enough for an answer drawn from a few places, few enough to read at a glance.
DEFAULT_K = 3
#: A sentence ranks as evidence only if it scores at least this fraction of the best sentence's score, so that a
#: strong match is not followed by sentences that merely share one incidental word with the question.
RELATIVE_FLOOR = 0.3
#: A sentence longer than this (a note without punctuation or line breaks) is cut at whitespace into windows of at
#: most this many characters: a whole note is not evidence of anything.
MAX_SPAN_CHARS = 400

#: Words of questions and answers *about* a note rather than clinical content ("Which medications are mentioned in
#: the note?", "The patient's blood type is not documented"). Nearly every note and question contains them, so a
#: sentence sharing only these with the question would be reported as support for an answer it says nothing about.
#: The last row is the vocabulary of the note-QA prompt ("a snippet of a patient's clinical note and a following
#: instruction from a healthcare professional"), which a small model sometimes echoes as its answer.
NOTE_META_WORDS = (
    "patient", "patients", "pt", "note", "notes", "mention", "mentions", "mentioned", "document", "documents",
    "documented", "documentation", "report", "reports", "reported", "state", "states", "stated", "information",
    "provided", "provide", "specified", "specify", "indicated", "indicate", "indicates", "according", "based",
    "identify", "list", "describe", "explain", "summarize", "summary", "text", "given", "please", "answer",
    "question", "following", "would", "could", "also", "may", "might", "must", "shall",
    "medical", "clinical", "instruction", "instructions", "snippet", "healthcare", "professional",
)  # fmt: skip
STOPWORDS = tuple(STOPWORDS_EN_PLUS) + NOTE_META_WORDS

#: Abbreviations whose final period is not a sentence end even before a capital: titles before a name ("Dr. X")
#: and Latin abbreviations inside a sentence ("e.g. Aspirin"). Dosing abbreviations ("b.i.d.", "p.o.") are absent on
#: purpose: before a capital they usually do end the sentence ("metformin 500 mg b.i.d. Recheck in 3 months."), and
#: before a lower-case word the boundary rule below never splits anyway.
NO_BREAK_ABBREVIATIONS = frozenset(
    {"dr", "drs", "mr", "mrs", "ms", "prof", "st", "sr", "jr", "vs", "approx", "e.g", "i.e", "eg", "ie", "cf", "fig"}
)  # fmt: skip

# A boundary is the separator between two sentences; the punctuation that ends a sentence stays in the sentence.
_BOUNDARY = re.compile(
    r"""
    (?P<line>[ \t]*(?:\r\n|\r|\n)\s*)                 # a line break (blank lines included)
    | (?P<comma>                                      # MTSamples' commas that stood for line breaks:
        (?<=[.:;!?])[ \t]*,[ \t,]*                    #   right after punctuation: "strangulation.,A." "COURSE: , She"
        | [ \t]+,[ \t,]*                              #   after a space, never so in prose: "STUDIES ,Blood"
        | ,{2,}[ \t]*                                 #   doubled: "arthritis,,Hypoxia"
    )
    | (?P<stop>(?:(?<=[.!?])|(?<=[.!?]["')\]]))[ \t]+(?=["'(\[]?[A-Z0-9]))  # end mark, space, then a capital/digit
    """,
    re.VERBOSE,
)
# The text from a sentence's start to a period that only numbers a list item: "1.", "IV.", "B."
_ENUMERATOR = re.compile(r"\W*(?:\d{1,3}|[ivxlcIVXLC]{1,6}|[A-Za-z])\.")
# A section header alone, such as "HISTORY OF PRESENT ILLNESS:" on its own line: a label, not a statement.
_HEADER_ONLY = re.compile(r"[^a-z]*:")
_TRIM = " \t\r\n\f\v,"
_ALNUM = re.compile(r"[^\W_]")  # a letter or digit, in any script


@dataclass(frozen=True)
class Span:
    """A sentence of a note: ``note[start:end] == text``."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Evidence:
    """A sentence of a note that supports an answer, with its BM25 score (higher is more relevant)."""

    text: str
    start: int
    end: int
    score: float


def _ends_sentence(note: str, seg_start: int, match: re.Match[str]) -> bool:
    """Whether a period (or ``,`` artefact after one) really ends the sentence, and is not an abbreviation's or a
    list number's."""
    if match.lastgroup == "line":
        return True
    end = match.start()
    if note[end - 1 : end] in "\"')]":
        end -= 1
    if note[end - 1 : end] != ".":
        return True
    if _ENUMERATOR.fullmatch(note, seg_start, end):
        return False
    word_start = max(note.rfind(" ", seg_start, end), note.rfind("\t", seg_start, end), seg_start - 1) + 1
    word = note[word_start : end - 1].lstrip("\"'([").lower()
    return word not in NO_BREAK_ABBREVIATIONS


def _windows(note: str, start: int, end: int) -> list[tuple[int, int]]:
    """Cut an over-long sentence at whitespace into pieces of at most ``MAX_SPAN_CHARS`` (mid-word only when a
    single word is longer than that)."""
    pieces = []
    while end - start > MAX_SPAN_CHARS:
        cut = max(
            note.rfind(" ", start + 1, start + MAX_SPAN_CHARS),
            note.rfind("\t", start + 1, start + MAX_SPAN_CHARS),
        )
        cut = cut if cut > start else start + MAX_SPAN_CHARS
        piece_end = cut
        while note[piece_end - 1] in " \t":  # a run of spaces before the cut
            piece_end -= 1
        pieces.append((start, piece_end))
        start = cut
        while start < end and note[start] in " \t":
            start += 1
    pieces.append((start, end))
    return pieces


def split_sentences(note: str) -> list[Span]:
    """The note's sentences in order, each trimmed of surrounding whitespace and stray commas.

    Boundaries: line breaks (``\\n``, ``\\r\\n``, ``\\r``); the commas MTSamples left where the original had line
    breaks (",," or a comma right after ``.``/``:`` or after a space); and ``.``/``!``/``?`` followed by whitespace
    and a capital or digit, unless the period belongs to a list number ("1.", "IV.", "B." at a sentence start) or to
    a title or Latin abbreviation ("Dr. X", "e.g."). Decimals ("2.3 ng/mL") and dosing abbreviations inside a
    sentence ("b.i.d. with meals") never split, having no space or no capital after the period. Pieces without a
    letter or digit are left out; a sentence longer than ``MAX_SPAN_CHARS`` is cut into windows at whitespace.
    """
    bounds: list[tuple[int, int]] = []
    seg_start = 0
    for match in _BOUNDARY.finditer(note):
        if _ends_sentence(note, seg_start, match):
            bounds.append((seg_start, match.start()))
            seg_start = match.end()
    bounds.append((seg_start, len(note)))

    spans = []
    for start, end in bounds:
        piece = note[start:end]
        if not piece.strip(_TRIM):
            continue
        end -= len(piece) - len(piece.rstrip(_TRIM))
        start += len(piece) - len(piece.lstrip(_TRIM))
        for s, e in _windows(note, start, end):
            if _ALNUM.search(note, s, e):
                spans.append(Span(note[s:e], s, e))
    return spans


def _tokenize(texts: list[str]) -> list[list[str]]:
    """Lower-cased, stop-word-free, Snowball-stemmed word tokens (two characters or more), as BM25 indexes them."""
    # A Stemmer object is not safe to share between threads; making one costs microseconds.
    stemmer = Stemmer.Stemmer("english")
    return bm25s.tokenize(
        texts, stopwords=list(STOPWORDS), stemmer=stemmer, return_ids=False, show_progress=False
    )


def find_evidence(note: str, question: str, answer: str, k: int = DEFAULT_K) -> list[Evidence]:
    """Up to ``k`` sentences of ``note`` that support ``answer`` to ``question``, in note order; ``[]`` when none
    does.

    Each sentence is scored with BM25 (Lucene variant, k1 = 1.5, b = 0.75; the note's sentences are the corpus)
    against the content words of the question and the answer together: the question locates the relevant part of
    the note, the answer names what was taken from it. Content words are what remains after English stop words and
    words about the note itself ("patient", "mentioned", "documented"), stemmed so "started" meets "start".

    The threshold rule. A sentence is evidence only if
      1. it shares at least one *discriminating* content word with the question or answer: one found in at most
         half of the note's sentences (Lucene IDF >= ln 2), or any shared word when the note has a single sentence.
         A word in most sentences ("pain" throughout a pain clinic note) says nothing about where the answer came
         from. Without this, a question about something the note never mentions would still get "evidence".
      2. its score is at least ``RELATIVE_FLOOR`` (0.3) of the best sentence's: absolute BM25 scores depend on the
         note's length (one shared rare word scores about 0.7 in a 2-sentence note, 3.5 in a 50-sentence one), so
         a fixed minimum score would be too strict for short notes or too lax for long ones; relative to the best
         match, it drops the weak tail once a strong match exists.
    Ties keep note order, so the result is deterministic.
    """
    sentences = [s for s in split_sentences(note) if not _HEADER_ONLY.fullmatch(s.text)]
    if not sentences:
        return []
    *corpus, query = _tokenize([s.text for s in sentences] + [f"{question}\n{answer}"])
    indexed = [(s, tokens) for s, tokens in zip(sentences, corpus) if tokens]
    if not indexed:
        return []
    vocab = {t for _, tokens in indexed for t in tokens}
    terms = sorted(set(query) & vocab)  # each term once: an answer repeating a word does not weigh it more
    if not terms:
        return []
    n = len(indexed)
    df = {t: sum(t in tokens for _, tokens in indexed) for t in terms}
    discriminating = {t for t in terms if n == 1 or df[t] <= n / 2}

    retriever = bm25s.BM25()
    retriever.index([tokens for _, tokens in indexed], show_progress=False)
    scores = retriever.get_scores(terms)

    candidates = [
        (float(score), span)
        for (span, tokens), score in zip(indexed, scores)
        if score > 0 and discriminating.intersection(tokens)
    ]
    if not candidates:
        return []
    best = max(score for score, _ in candidates)
    ranked = sorted(
        (c for c in candidates if c[0] >= RELATIVE_FLOOR * best), key=lambda c: (-c[0], c[1].start)
    )
    chosen = sorted(ranked[:k], key=lambda c: c[1].start)
    evidence = [Evidence(span.text, span.start, span.end, round(score, 4)) for score, span in chosen]
    for e in evidence:
        assert note[e.start : e.end] == e.text, "evidence must be a verbatim span of the note"
    return evidence
