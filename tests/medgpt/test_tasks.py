"""Tasks on the real model: MCQ choices are always options; long notes are chunked, not truncated."""

import asyncio
import time

import pytest

from medgpt import prompts, tasks
from medgpt.engines import GenerationTimeout, InvalidOutput, WorkOverBudget
from medgpt.engines.base import Capabilities, Chunk, Engine, ModelInfo
from medgpt.settings import ModelSpec, Settings
from tests.conftest import MCQ, TEST_CTX


def test_mcq_choice_is_always_an_option(engine):
    result = asyncio.run(
        tasks.answer_mcq(engine, "gemma3-270m", MCQ["question"], MCQ["options"], sampling=tasks.Sampling(max_tokens=96))
    )
    assert result.choice in MCQ["options"]
    assert result.answer == f"{result.choice}: {MCQ['options'][result.choice]}"
    assert result.usage.completion_tokens > 0 and result.seconds > 0


def test_mcq_rescue_when_tokens_run_out(engine):
    # 8 tokens cannot hold an analysis and an answer: the forced-choice step must supply the option.
    result = asyncio.run(
        tasks.answer_mcq(engine, "gemma3-270m", MCQ["question"], MCQ["options"], sampling=tasks.Sampling(max_tokens=8))
    )
    assert result.choice in MCQ["options"] and not result.well_formed
    # the choice came from the rescue, or from the cut analysis when that already names one option
    assert result.rescued or prompts.option_named(result.analysis, MCQ["options"]) == result.choice


def test_unconstrained_mcq_reports_what_the_model_wrote(engine):
    result = asyncio.run(
        tasks.answer_mcq(
            engine, "gemma3-270m", MCQ["question"], MCQ["options"], sampling=tasks.Sampling(max_tokens=24), constrained=False
        )
    )
    assert not result.rescued and result.raw_text
    assert result.choice is None or result.choice in MCQ["options"]


class _Babbler(Engine):
    """An engine that ignores constraints and writes prose: stands for a remote model that does not comply."""

    name = "babbler"

    async def generate(self, request):
        yield Chunk("I am not sure, maybe the second one?")
        yield Chunk(done=True, prompt_tokens=10, completion_tokens=9, finish_reason="stop")

    async def models(self):
        return [ModelInfo("m", self.name)]


class _Contradiction(Engine):
    """Stands for the small model's letter prior (labelled fake): the analysis argues for one option, the letter
    after it names another."""

    name = "contradiction"
    capabilities = Capabilities(grammar=True, json_schema=True)

    async def generate(self, request):
        yield Chunk("<analysis>Heparin acts at once; warfarin takes days.</analysis>\n<answer>D: Vitamin K</answer>")
        yield Chunk(done=True, prompt_tokens=10, completion_tokens=20, finish_reason="stop")

    async def models(self):
        return [ModelInfo("m", self.name)]


def test_mcq_answer_follows_the_option_its_analysis_names():
    options = {"A": "Aspirin", "B": "Heparin", "C": "Ibuprofen", "D": "Vitamin K"}
    result = asyncio.run(tasks.answer_mcq(_Contradiction([ModelSpec(name="m")]), "m", "PE: which drug now?", options))
    assert result.choice == "B" and result.answer == "B: Heparin" and not result.rescued


def test_mcq_never_returns_an_unparsed_answer():
    with pytest.raises(InvalidOutput):
        asyncio.run(tasks.answer_mcq(_Babbler([ModelSpec(name="m")]), "m", MCQ["question"], MCQ["options"]))


class _SlowBabbler(_Babbler):
    """A FAKE engine (no model): writes prose that names no option, so every constrained MCQ goes to the rescue,
    after ``seconds`` of work per generation; records each request it is given."""

    name = "slow-babbler"

    def __init__(self, models, seconds: float = 0.0):
        super().__init__(models)
        self.seconds = seconds
        self.requests = []

    async def generate(self, request):
        self.requests.append(request)
        await asyncio.sleep(self.seconds)
        async for chunk in super().generate(request):
            yield chunk


def test_the_mcq_rescue_keeps_the_request_deadline():
    engine = _SlowBabbler([ModelSpec(name="m")])
    sampling = tasks.Sampling(max_tokens=64, seed=7, timeout=600, deadline=time.monotonic() + 30)
    with pytest.raises(InvalidOutput):
        asyncio.run(tasks.answer_mcq(engine, "m", MCQ["question"], MCQ["options"], sampling=sampling))
    _answer, rescue = engine.requests
    assert rescue.max_tokens == 16 and rescue.temperature == 0.0 and rescue.seed == 7
    assert rescue.timeout is not None and rescue.timeout <= 30  # the deadline's time left, not the 600 s timeout


def test_no_mcq_rescue_starts_after_the_request_deadline():
    engine = _SlowBabbler([ModelSpec(name="m")], seconds=0.3)  # the answer alone outlasts the deadline
    sampling = tasks.Sampling(max_tokens=64, timeout=600, deadline=time.monotonic() + 0.2)
    with pytest.raises(GenerationTimeout):
        asyncio.run(tasks.answer_mcq(engine, "m", MCQ["question"], MCQ["options"], sampling=sampling))
    assert len(engine.requests) == 1  # the answer only: no rescue began


@pytest.fixture(scope="module")
def shipped_engine(settings):
    """The shipped ``medgpt`` model (base + adapter) at the tests' context size. Summaries are asked of it, not of
    the base model: the base model copies the summary instruction back, which the echo guard refuses (a 502)."""
    from medgpt.engines.llamacpp import LlamaCppEngine

    spec = Settings().model("medgpt").model_copy(update={"n_ctx": TEST_CTX})
    engine = LlamaCppEngine([spec], settings.llamacpp)
    yield engine
    asyncio.run(engine.aclose())


def test_long_note_is_chunked_and_merged(shipped_engine, transcriptions):
    note = transcriptions[0]["transcription"]  # ~10,000 characters, well over a 1,024-token context
    result = asyncio.run(tasks.summarize(shipped_engine, "medgpt", note, sampling=tasks.Sampling(max_tokens=48)))
    assert result.chunks > 1 and len(result.partials) == result.chunks
    assert result.summary and result.finish_reason in {"stop", "length", "repetition"}


def test_split_to_fit_respects_the_budget_and_keeps_all_text(engine, transcriptions):
    note = transcriptions[1]["transcription"]
    pieces = asyncio.run(tasks.split_to_fit(engine, "gemma3-270m", note, 300))
    counts = [asyncio.run(engine.count_tokens("gemma3-270m", p)) for p in pieces]
    assert len(pieces) > 1 and max(counts) <= 300
    assert "".join(pieces).split() == note.split()  # nothing lost, nothing reordered


def test_summary_work_counts_parts_merge_rounds_and_the_answer():
    assert tasks.summary_work(1, 100, 300, fan_in=4) == 300  # one prompt: the answer only
    assert tasks.summary_work(3, 100, 300, fan_in=4) == 3 * 100 + 300  # one merge prompt holds the three
    assert tasks.summary_work(10, 100, 300, fan_in=4) == 10 * 100 + 3 * 100 + 300  # 10 -> 3 merges -> final
    assert tasks.summary_work(20, 100, 300, fan_in=4) == 20 * 100 + (5 + 2) * 100 + 300  # 20 -> 5 -> 2 -> final


def test_a_summary_over_the_work_budget_is_refused_before_any_generation(shipped_engine, transcriptions, monkeypatch):
    calls = []
    generate = shipped_engine.generate
    monkeypatch.setattr(shipped_engine, "generate", lambda request: calls.append(request) or generate(request))
    note = transcriptions[0]["transcription"]
    with pytest.raises(WorkOverBudget) as refused:
        asyncio.run(tasks.summarize(shipped_engine, "medgpt", note, sampling=tasks.Sampling(max_tokens=48), work_budget=100))
    assert calls == [] and "100 per request" in str(refused.value)


def test_partial_summaries_too_many_for_one_prompt_are_merged_in_rounds_until_they_fit(
    shipped_engine, transcriptions
):
    words = transcriptions[0]["transcription"].split()
    partials = [" ".join(words[i * 120 : (i + 1) * 120]) for i in range(9)]  # ~9 x 170 tokens: over 1,024
    run = tasks._Run("medgpt", "summarize")
    merger = tasks._Merger(shipped_engine, "medgpt", run, tasks.Sampling(max_tokens=24), budget=600)

    async def reduce():
        before = await merger.fits(partials, 24)
        level = await merger.reduce(partials, tasks.Sampling(max_tokens=24), "brief", None)
        return before, level, await merger.fits(level, 24)

    fitted_before, level, fits_after = asyncio.run(reduce())
    assert not fitted_before and fits_after
    assert 1 <= len(level) < len(partials) and run.usage.completion_tokens > 0


def test_a_request_past_its_deadline_starts_no_generation(shipped_engine):
    past = tasks.Sampling(max_tokens=16, deadline=time.monotonic() - 1)
    with pytest.raises(GenerationTimeout):
        asyncio.run(tasks.summarize(shipped_engine, "medgpt", "Patient is well.", sampling=past))


def test_one_deadline_bounds_every_chunk_of_a_long_summary(shipped_engine, transcriptions):
    note = transcriptions[0]["transcription"]  # several chunks, each one well over a second of work
    started = time.monotonic()
    sampling = tasks.Sampling(max_tokens=48, timeout=600, deadline=started + 3)
    with pytest.raises(GenerationTimeout):
        asyncio.run(tasks.summarize(shipped_engine, "medgpt", note, sampling=sampling))
    assert time.monotonic() - started < 30  # each chunk alone may take 600 s; the request's 3 s won
