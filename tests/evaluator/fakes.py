"""Scripted stand-ins for the model under test and for a judge backend, used by the fast tests only (the tests
named *_real_* use the real GGUF and real servers)."""

from __future__ import annotations

from evaluator.types import MCQItem, MCQOutput, SummaryItem, SummaryOutput


class ScriptedSampler:
    """A fixed letter per item id; unconstrained answers break the format for the ids in ``broken``."""

    def __init__(self, name: str, choices: dict[str, str], broken: set[str] = frozenset()):
        self.name = name
        self.choices = choices
        self.broken = broken
        self.calls = 0

    async def answer_mcq(self, item: MCQItem, constrained: bool = True) -> MCQOutput:
        self.calls += 1
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

    async def summarize(self, item: SummaryItem) -> SummaryOutput:
        return SummaryOutput(
            self.name,
            summary=item.reference.split(".")[0],
            prompt_tokens=80,
            completion_tokens=15,
            seconds=0.3,
        )

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
