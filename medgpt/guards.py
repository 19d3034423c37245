"""Degenerate output: what counts as a loop, an echo or an empty answer, and the guard that stops a loop as it starts.

A small model fails in three recognisable ways, and the evaluator and the gateway must agree on what they are:

- **empty**: no word at all.
- **loop**: a run of ``LOOP_NGRAM`` (6) words that occurs ``LOOP_REPEATS`` (3) or more times, or a short stretch of
  characters repeated back to back (``000000…``, ``$$$$…``) that word n-grams cannot see.
- **echo**: the answer is the prompt copied back. Counted over ``ECHO_NGRAM`` (8)-word spans, so a quoted dose or
  a copied sentence of the note is not an echo. An answer is one when it repeats any 8-word run of the instruction
  (no real answer quotes "Keep diagnoses, medications, doses and follow-up; do not add anything …": the base model
  starts most answers that way, then rewords the rest), or when it is long (``ECHO_MIN_WORDS``) and at least
  ``ECHO_FRACTION`` of its words sit in spans copied from the prompt; or when its opening is the instruction
  reworded (``OPENING_SHARE`` of its first ``OPENING_WORDS`` words are the instruction's); or when it writes one of the prompt's
  delimiters (``[Text Begin]``, ``[Note End]``, …: :data:`medgpt.prompts.PROMPT_MARKERS`), i.e. it continues the
  prompt document with made-up text instead of answering.

:class:`RepetitionGuard` applies the loop rule while a model writes: the gateway stops the generation when it fires
(``finish_reason="repetition"``) and keeps the text up to where the repetition began.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Literal

from medgpt.prompts import PROMPT_MARKERS

Degenerate = Literal["empty", "loop", "echo"]

LOOP_NGRAM = 6
LOOP_REPEATS = 3
ECHO_NGRAM = 8
ECHO_FRACTION = 0.7
ECHO_MIN_WORDS = 40
OPENING_WORDS = 20
OPENING_SHARE = 0.8

_WORD = re.compile(r"\w+")
#: A unit of 1-20 characters repeated back to back at least 6 more times (at least 7 copies, 28+ characters):
#: "0000000", "ha ha ha ha ha ha ha", "$\\$\\$\\…". Anchored at the end so the guard can test the tail only.
_CHAR_LOOP = re.compile(r"(.{1,20}?)\1{6,}$", re.S)
_CHAR_LOOP_MIN = 28


def _words(text: str) -> list[re.Match[str]]:
    return list(_WORD.finditer(text.lower()))


def loop_start(text: str, n: int = LOOP_NGRAM, repeats: int = LOOP_REPEATS) -> int | None:
    """Where the repetition in ``text`` begins, as a character offset to cut at, or None when it does not loop.

    Word loops are cut at the second occurrence of the first n-gram to reach ``repeats`` (the first occurrence is
    the model's own sentence and is kept); character loops at the start of their second copy.
    """
    words = _words(text)
    seen: Counter[tuple[str, ...]] = Counter()
    first_repeat: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - n + 1):
        gram = tuple(w.group() for w in words[i : i + n])
        seen[gram] += 1
        if seen[gram] == 2:
            first_repeat[gram] = words[i].start()
        if seen[gram] >= repeats:
            return first_repeat[gram]
    tail_from = max(0, len(text) - 400)
    m = _CHAR_LOOP.search(text, tail_from)
    if m and len(m.group(0)) >= _CHAR_LOOP_MIN:
        return m.start() + len(m.group(1))
    return None


def copied_fraction(output: str, source: str, n: int = ECHO_NGRAM) -> float:
    """The share of ``output``'s words that lie in a run of ``n`` consecutive words also found in ``source``."""
    out = [w.group() for w in _words(output)]
    if len(out) < n:
        return 0.0
    src = [w.group() for w in _words(source)]
    grams = {tuple(src[i : i + n]) for i in range(len(src) - n + 1)}
    covered = [False] * len(out)
    for i in range(len(out) - n + 1):
        if tuple(out[i : i + n]) in grams:
            covered[i : i + n] = [True] * n
    return sum(covered) / len(out)


def opens_with_instruction(output: str, instruction: str) -> bool:
    """The answer opens with the instruction reworded: at least ``OPENING_SHARE`` of its first ``OPENING_WORDS``
    words (12 at least) are words of the instruction. The echo retry's stronger repeat penalty makes the base model
    reword rather than copy ("You are a medical assistant for clinicians. Answer from established knowledge and the
    text you have been given; …"): 17 of 20 MEDIQA answers scored 0.8-0.9 here, while no answer of the tuned model
    in any mode scored above 0.46."""
    words = [w.group() for w in _words(output)][:OPENING_WORDS]
    if len(words) < 12:
        return False
    vocabulary = {w.group() for w in _words(instruction)}
    return sum(w in vocabulary for w in words) / len(words) >= OPENING_SHARE


def is_echo(output: str, prompt_input: str, instruction: str = "") -> bool:
    """``output`` is the prompt copied back: it writes a prompt delimiter, repeats a run of ``ECHO_NGRAM`` words of
    the ``instruction`` (no real answer quotes our instructions), or it is long and most of it is copied from the
    prompt (``instruction`` + ``prompt_input``); see the module docstring for the thresholds."""
    if any(marker in output for marker in PROMPT_MARKERS):
        return True
    n_words = len(_words(output))
    if n_words < ECHO_NGRAM:
        return False
    if instruction and (copied_fraction(output, instruction) > 0 or opens_with_instruction(output, instruction)):
        return True
    return n_words >= ECHO_MIN_WORDS and copied_fraction(output, f"{instruction}\n{prompt_input}") >= ECHO_FRACTION


def degenerate(output: str, prompt_input: str = "", instruction: str = "") -> Degenerate | None:
    """Which degenerate kind ``output`` is (checked in the order empty, loop, echo), or None for a real answer."""
    if not _WORD.search(output):
        return "empty"
    if loop_start(output) is not None:
        return "loop"
    if is_echo(output, prompt_input, instruction):
        return "echo"
    return None


class RepetitionGuard:
    """Watches a generation as it streams; :meth:`feed` returns True once the text has started to loop.

    Incremental, so a long answer costs the same per token as a short one: each completed word updates the n-gram
    counts once (a word is complete when a non-word character follows it, so a token that ends mid-word is never
    counted early), in the same order :func:`loop_start` scans, so the guard fires at the same n-gram and cuts at
    the same place :func:`loop_start` would on the text so far. Character loops are tested on the last 400
    characters after every piece, since a run like ``000000…`` may never contain a word boundary. Once fired,
    :attr:`keep` is the text up to where the loop began (trailing whitespace removed).
    """

    def __init__(self, n: int = LOOP_NGRAM, repeats: int = LOOP_REPEATS) -> None:
        self.n, self.repeats = n, repeats
        self.text = ""
        self.keep: str | None = None
        self._scanned = 0  # offset in text up to which complete words have been counted
        self._words: list[tuple[str, int]] = []  # (lower-cased word, start offset)
        self._seen: Counter[tuple[str, ...]] = Counter()
        self._first_repeat: dict[tuple[str, ...], int] = {}

    def feed(self, piece: str) -> bool:
        if self.keep is not None:
            return True
        if not piece:
            return False
        self.text += piece
        cut = self._word_loop() if not piece.isalnum() else None
        if cut is None and self._may_end_in_char_loop():
            m = _CHAR_LOOP.search(self.text, max(0, len(self.text) - 400))
            if m and len(m.group(0)) >= _CHAR_LOOP_MIN:
                cut = m.start() + len(m.group(1))
        if cut is not None:
            self.keep = self.text[:cut].rstrip()
            return True
        return False

    def _may_end_in_char_loop(self) -> bool:
        """Whether the text ends in 7 copies of its last ``u`` characters for some unit length ``u`` of 1-20: what
        any match of the character-loop pattern implies. Twenty slice comparisons instead of a regex search of
        the tail on every piece."""
        text = self.text
        return any(text.endswith(text[-u:] * 7) for u in range(1, min(20, len(text) // 7) + 1))

    def _word_loop(self) -> int | None:
        """Count the n-grams ending at each newly completed word; the cut offset once one reaches ``repeats``."""
        for m in _WORD.finditer(self.text, self._scanned):
            if m.end() == len(self.text):  # may still grow ("pati" + "ent"): counted once a separator follows
                break
            self._scanned = m.end()
            self._words.append((m.group().lower(), m.start()))
            if len(self._words) < self.n:
                continue
            window = self._words[-self.n :]
            gram = tuple(w for w, _ in window)
            self._seen[gram] += 1
            if self._seen[gram] == 2:
                self._first_repeat[gram] = window[0][1]
            if self._seen[gram] >= self.repeats:
                return self._first_repeat[gram]
        return None
