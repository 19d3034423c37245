"""Loop and echo guards: the detectors on known text, the streaming guard against the batch rule, and the guards
inside the tasks, on the real base GGUF (a greedy generation that really loops) and on the Ollama client against
its loopback stub (scripted replies: a loop, an echo)."""

import asyncio

import pytest

from medgpt import prompts, tasks
from medgpt.engines.base import Chunk, Engine, InvalidOutput, ModelInfo
from medgpt.engines.ollama import OllamaEngine
from medgpt.guards import LOOP_NGRAM, RepetitionGuard, copied_fraction, degenerate, is_echo, loop_start
from medgpt.settings import ModelSpec, OllamaSettings
from tests.conftest import MCQ
from tests.medgpt.ollama_stub import OllamaStub

LOOP = "Fever in children is common. " + "The child has a fever and a cough. " * 6


def pieces(text: str, size: int = 3) -> list[str]:
    """Text cut into small pieces, mid-word included, the way tokens arrive."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def feed_all(guard: RepetitionGuard, parts: list[str]) -> str | None:
    for part in parts:
        if guard.feed(part):
            return guard.keep
    return None


# --- detectors -------------------------------------------------------------------------------------------------


def test_word_loop_is_cut_at_its_second_occurrence():
    cut = loop_start(LOOP)
    assert LOOP[:cut].rstrip() == "Fever in children is common. The child has a fever and a cough."
    assert degenerate(LOOP) == "loop" and degenerate(LOOP[:cut]) is None


def test_two_occurrences_are_not_a_loop():
    text = "Give aspirin 81 mg daily with food. Review in a week. Give aspirin 81 mg daily with food."
    assert loop_start(text) is None and degenerate(text) is None


def test_character_loops_without_words():
    assert loop_start("The dose is 0" + "0" * 40) == len("The dose is 0")
    assert degenerate("Answer: " + "$\\" * 30) == "loop"
    assert loop_start("Blood pressure 120/80 mmHg.") is None


def test_echo_needs_copied_spans_and_the_instruction_or_length():
    note = "Patient started on lisinopril 10 mg daily for hypertension and will follow up in four weeks at clinic."
    instruction = prompts.note_qa_instruction()
    quoted = "Lisinopril 10 mg daily for hypertension and will follow up in four weeks."
    assert copied_fraction(quoted, note) > 0.7
    assert not is_echo(quoted, note, instruction)  # short and copies no instruction: a real, quoting answer
    echoed = "Write a response that appropriately completes the instruction. " + note
    assert is_echo(echoed, note, instruction) and degenerate(echoed, note, instruction) == "echo"
    assert degenerate("   ") == "empty"


# --- the streaming guard ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 3, 7])
def test_streaming_guard_cuts_where_the_batch_rule_does(size):
    keep = feed_all(RepetitionGuard(), pieces(LOOP, size))
    assert keep == LOOP[: loop_start(LOOP)].rstrip()


def test_streaming_guard_counts_a_word_only_once_it_is_complete():
    # Twice "a b c d e f", then "a b c d e f" arriving as "...e f" + "x": the last run is "a b c d e fx", so the
    # text never holds three equal runs; a guard that counted the unfinished "f" would fire on the third piece.
    guard = RepetitionGuard()
    assert feed_all(guard, ["a b c d e f. ", "a b c d e f. a b c d e f", "x. The end. "]) is None
    assert loop_start(guard.text) is None and guard.keep is None
    assert not RepetitionGuard().feed("")


def test_streaming_guard_catches_a_character_loop_made_of_alphanumeric_pieces():
    guard = RepetitionGuard()
    keep = feed_all(guard, ["Dose", ": 1", "0"] + ["00"] * 30)
    assert keep == "Dose: 10"


def test_streaming_guard_uses_the_configured_ngram():
    assert RepetitionGuard().n == LOOP_NGRAM
    assert feed_all(RepetitionGuard(n=2, repeats=3), pieces("no no no no ", 3)) == "no"


# --- guards inside the tasks ------------------------------------------------------------------------------------


class _Looper(Engine):
    """Writes a loop for ever, the way a greedy small model does, and records whether its stream was closed: a
    task must stop reading and close it as soon as the guard fires, not run it to ``max_tokens``."""

    name = "looper"

    def __init__(self) -> None:
        super().__init__([ModelSpec(name="m")])
        self.sent = 0
        self.closed = False

    async def generate(self, request):
        try:
            for _ in range(request.max_tokens):
                self.sent += 1
                yield Chunk("The patient is stable today. ")
            yield Chunk(
                done=True, prompt_tokens=5, completion_tokens=request.max_tokens, finish_reason="length"
            )
        finally:
            self.closed = True

    async def models(self):
        return [ModelInfo("m", self.name)]


def test_task_closes_the_engine_stream_when_the_guard_fires():
    engine = _Looper()
    messages = [{"role": "user", "content": "Say something."}]
    result = asyncio.run(
        tasks.collect(tasks.text_stream(engine, "m", messages, tasks.Sampling(max_tokens=500)))
    )
    # The 6-word run "the patient is stable today the" reaches its third copy in the fourth sentence.
    assert engine.closed and engine.sent == 4
    assert result.finish_reason == "repetition" and result.guards == ["repetition"]
    assert result.text == "The patient is stable today."
    assert result.usage.completion_tokens == engine.sent and result.usage.prompt_tokens > 0


def test_every_mode_sends_its_repeat_penalty_and_a_request_can_override_it():
    """Per-mode defaults reach the engine (Ollama's ``options.repeat_penalty``); an explicit one wins."""
    engine_specs = [ModelSpec(name="medgpt", n_ctx=4096)]
    answer = "<analysis>Casts mean kidney.</analysis>\n<answer>B: Acute pyelonephritis</answer>"
    with OllamaStub(
        ["Lisinopril.", "Hypertension is high blood pressure.", "Short summary.", answer, "Overridden."]
    ) as stub:
        engine = OllamaEngine(engine_specs, OllamaSettings(host=stub.url), timeout=10)
        asyncio.run(tasks.answer_note(engine, "medgpt", "Started lisinopril.", "Which drug?"))
        asyncio.run(tasks.answer_open(engine, "medgpt", "What is hypertension?"))
        asyncio.run(tasks.summarize(engine, "medgpt", "Pt with cough, afebrile. Plan: fluids."))
        asyncio.run(tasks.answer_mcq(engine, "medgpt", MCQ["question"], MCQ["options"]))
        asyncio.run(tasks.answer_open(engine, "medgpt", "q", sampling=tasks.Sampling(repeat_penalty=1.05)))
    sent = [r["options"]["repeat_penalty"] for r in stub.requests]
    p = tasks.REPEAT_PENALTY
    assert sent == [p["note_qa"], p["open"], p["summarize"], p["mcq"], 1.05]


def test_a_loop_from_ollama_is_cut():
    reply = "Take the tablets with water. " + "Take one tablet twice a day with food. " * 40
    with OllamaStub([reply]) as stub:
        engine = OllamaEngine(
            [ModelSpec(name="medgpt", n_ctx=4096)], OllamaSettings(host=stub.url), timeout=10
        )
        result = asyncio.run(tasks.answer_open(engine, "medgpt", "How do I take it?"))
    assert result.finish_reason == "repetition"
    assert result.text == "Take the tablets with water. Take one tablet twice a day with food."


def test_a_looping_mcq_analysis_is_cut_and_the_choice_rescued():
    """An engine without grammars (Ollama) whose analysis loops: cut, then the forced-choice follow-up answers."""
    looping = (
        "<analysis>White cell casts point to the kidney. " + "The casts come from the kidney tubules. " * 30
    )
    with OllamaStub([looping, '{"choice": "B"}']) as stub:
        engine = OllamaEngine(
            [ModelSpec(name="medgpt", n_ctx=4096)], OllamaSettings(host=stub.url), timeout=10
        )
        result = asyncio.run(tasks.answer_mcq(engine, "medgpt", MCQ["question"], MCQ["options"]))
    assert result.finish_reason == "repetition" and result.rescued and result.choice == "B"
    assert result.analysis == "White cell casts point to the kidney. The casts come from the kidney tubules."
    assert (
        result.raw_text.count("tubules") == 1 and stub.requests[1]["format"]
    )  # the rescue ran under a schema


NOTE = (
    "Patient is a 64-year-old man admitted with community-acquired pneumonia. He was treated with ceftriaxone and "
    "azithromycin, improved over three days and was discharged home on oral amoxicillin for five more days."
)


def test_an_echo_is_retried_with_a_stronger_penalty_and_the_retry_is_returned():
    echo = prompts.note_qa_instruction() + " " + NOTE
    with OllamaStub([echo, "Ceftriaxone and azithromycin, then amoxicillin."]) as stub:
        engine = OllamaEngine(
            [ModelSpec(name="medgpt", n_ctx=4096)], OllamaSettings(host=stub.url), timeout=10
        )
        result = asyncio.run(tasks.answer_note(engine, "medgpt", NOTE, "Which antibiotics were given?"))
    assert result.text == "Ceftriaxone and azithromycin, then amoxicillin." and result.guards == ["echo"]
    assert [r["options"]["repeat_penalty"] for r in stub.requests] == [
        tasks.REPEAT_PENALTY["note_qa"],
        tasks.ECHO_RETRY_PENALTY,
    ]


def test_an_answer_that_echoes_twice_is_refused_never_returned():
    echo = prompts.note_qa_instruction() + " " + NOTE
    with OllamaStub([echo, echo]) as stub:
        engine = OllamaEngine(
            [ModelSpec(name="medgpt", n_ctx=4096)], OllamaSettings(host=stub.url), timeout=10
        )
        with pytest.raises(tasks.EchoedPrompt, match="echoed the prompt instead of answering") as info:
            asyncio.run(tasks.answer_note(engine, "medgpt", NOTE, "Which antibiotics were given?"))
    assert isinstance(info.value, InvalidOutput)  # answered as a 502 by the gateway
    assert info.value.mode == "note_qa" and info.value.guards == ["echo", "echo"]


# --- the real base model ------------------------------------------------------------------------------------------

#: Found by trying prompts on the base GGUF with greedy decoding and no repeat penalty: it restates the request
#: and then repeats the same line until max_tokens ("The side effects of metformin. …" over and over).
LOOPING_PROMPT = [{"role": "user", "content": "List the side effects of metformin."}]


def test_loop_guard_stops_a_real_looping_generation_of_the_base_model(engine):
    max_tokens = 256
    sampling = tasks.Sampling(max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.0)
    unguarded = asyncio.run(_raw(engine, sampling))
    assert degenerate(unguarded) == "loop"  # the model really loops here without the guard

    result = asyncio.run(tasks.collect(tasks.text_stream(engine, "gemma3-270m", LOOPING_PROMPT, sampling)))
    assert result.finish_reason == "repetition" and "repetition" in result.guards
    assert result.text and degenerate(result.text) != "loop" and len(result.text) < len(unguarded) // 3
    assert 0 < result.usage.completion_tokens < max_tokens // 3
    assert result.usage.prompt_tokens > 5
    # Closing the stream stopped llama.cpp within a token: the model's lock is free at once, where a generation
    # left running to max_tokens would hold it for the ~200 tokens still to write.
    assert engine._lock.acquire(timeout=2)
    engine._lock.release()


async def _raw(engine, sampling: tasks.Sampling) -> str:
    from medgpt.engines.base import GenerationRequest, complete

    request = GenerationRequest(
        "gemma3-270m", LOOPING_PROMPT, max_tokens=sampling.max_tokens, repeat_penalty=1.0
    )
    return (await complete(engine, request)).text


def test_the_base_model_copying_the_summary_instruction_is_refused(engine, transcriptions):
    """The base model (not instruction-tuned) answers a summary request by writing the instruction out again, and
    a stronger repeat penalty does not stop it (llama.cpp penalises only tokens the model itself wrote): refused,
    never returned."""
    note = transcriptions[0]["transcription"][:600]  # an autopsy report's list of findings
    with pytest.raises(tasks.EchoedPrompt) as info:
        asyncio.run(tasks.summarize(engine, "gemma3-270m", note, sampling=tasks.Sampling(max_tokens=32)))
    assert info.value.mode == "summarize" and info.value.guards == ["echo", "echo"]


def test_echo_of_the_instruction_or_of_the_prompt_delimiters():
    """Seen from the base model on MTS-Dialog: the instruction copied (then reworded), or the prompt's document
    continued with made-up dialogue between its delimiters. Neither is an answer; a real summary is not flagged."""
    from medgpt import prompts
    from medgpt.guards import is_echo

    instruction = prompts.summary_instruction("brief")
    dialogue = "Doctor: When did your pain begin?\nPatient: About eight years ago, after a fall."
    copied = ("Summarize the clinical text below in a few sentences. Keep diagnoses, medications and follow-up; "
              "do not add anything that is")  # fmt: skip
    assert is_echo(copied + " doctor: when did the pain start", dialogue, instruction)
    assert is_echo("[Text Begin]\nPatient: I have a fever.\nDoctor: Take me to the hospital.", dialogue, instruction)
    assert not is_echo("Low back pain for eight years after a fall; physical therapy helped little.", dialogue,
                       instruction)  # fmt: skip


def test_echo_of_the_instruction_reworded():
    """The base model after the echo retry: the open-question instruction reworded, no 8-word run copied."""
    from medgpt import prompts
    from medgpt.guards import is_echo

    instruction = prompts.open_question_instruction()
    reworded = ("You are a medical assistant for clinicians. Answer from established knowledge and the text you have "
                "been given; say so when it does not contain answer.")  # fmt: skip
    assert is_echo(reworded, "What is herpes simplex?", instruction)
    answer = "Herpes simplex virus causes cold sores and genital lesions; it is spread by contact with the skin."
    assert not is_echo(answer, "What is herpes simplex?", instruction)
