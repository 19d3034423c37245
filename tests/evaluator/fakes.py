"""Scripted stand-ins for the model under test and for a judge backend, used by the fast tests only (the tests
named *_real_* use the real GGUF and real servers)."""

from __future__ import annotations

from evaluator.types import MCQItem, MCQOutput, NoteQAItem, OpenItem, SummaryItem, SummaryOutput, TextOutput


class ScriptedSampler:
    """A fixed letter per item id; unconstrained answers break the format for the ids in ``broken``.

    Free-text modes answer from ``texts`` (item id -> text) when given, else with a fixed sentence; every
    call's arguments are recorded in ``calls_seen`` (kind, item id, style, max_tokens).
    """

    unconstrained = True

    def __init__(
        self,
        name: str,
        choices: dict[str, str],
        broken: set[str] = frozenset(),
        texts: dict[str, str] | None = None,
    ):
        self.name = name
        self.choices = choices
        self.broken = broken
        self.texts = texts or {}
        self.calls = 0
        self.calls_seen: list[tuple] = []

    async def answer_mcq(
        self, item: MCQItem, constrained: bool = True, max_tokens: int | None = None
    ) -> MCQOutput:
        self.calls += 1
        self.calls_seen.append(("mcq", item.id, None, max_tokens))
        c = self.choices[item.id]
        raw = f"<analysis>because {c}</analysis>\n<answer>{c}: {item.options[c]}</answer>"
        if not constrained and item.id in self.broken:
            raw = f"<answer>{c}</answer><answer>{c}</answer>"
        return MCQOutput(
            self.name,
            raw_text=raw,
            analysis=f"because {c}",
            answer=f"{c}: {item.options[c]}",
            choice=c,
            well_formed=True,
            prompt_tokens=50,
            completion_tokens=20,
            seconds=0.5,
        )

    async def summarize(
        self, item: SummaryItem, style: str | None = None, max_tokens: int | None = None
    ) -> SummaryOutput:
        self.calls_seen.append(("summary", item.id, style, max_tokens))
        return SummaryOutput(
            self.name,
            summary=self.texts.get(item.id, item.reference.split(".")[0]),
            prompt_tokens=80,
            completion_tokens=15,
            seconds=0.3,
        )

    def _text(self, kind: str, item, max_tokens: int | None) -> TextOutput:
        self.calls_seen.append((kind, item.id, None, max_tokens))
        return TextOutput(
            self.name,
            text=self.texts.get(item.id, "Yes. It depends on the findings."),
            prompt_tokens=60,
            completion_tokens=10,
            seconds=0.2,
            finish_reason="stop",
        )

    async def answer_note(self, item: NoteQAItem, max_tokens: int | None = None) -> TextOutput:
        return self._text("note_qa", item, max_tokens)

    async def answer_open(self, item: OpenItem, max_tokens: int | None = None) -> TextOutput:
        return self._text("open", item, max_tokens)

    async def aclose(self) -> None:
        pass


class ScriptedJudge:
    """A judge backend replying from a list (cycled); records the messages it was sent."""

    def __init__(self, replies: list[str], name: str = "scripted", external: bool = False):
        self.name = name
        self.external = external
        self.replies = replies
        self.sent: list[list[dict]] = []

    async def send(self, messages):
        self.sent.append(messages)
        return self.replies[(len(self.sent) - 1) % len(self.replies)]

    async def aclose(self) -> None:
        pass
