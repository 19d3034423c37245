"""The one prompt module: rendering, parsing and the MCQ grammar's text."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from medgpt import prompts

GO_RENDER = Path(__file__).parent / "gotemplate" / "main.go"

OPTIONS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin"}


def test_render_gemma_turns_and_open_model_turn():
    text = prompts.render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                           {"role": "user", "content": "Dose?"}])
    assert text == (
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nDose?<end_of_turn>\n<start_of_turn>model\n"
    )


def test_render_folds_system_into_first_user_turn():
    text = prompts.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}])
    assert text == "<start_of_turn>user\nBe brief.\n\nQ<end_of_turn>\n<start_of_turn>model\n"


def test_render_chatml():
    assert prompts.render([{"role": "user", "content": "Q"}], "chatml") == (
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    )


def test_training_example_prompt_is_the_inference_prompt_byte_for_byte():
    row = prompts.mcq_training_example("Which drug?", OPTIONS, "B", "Because.")
    assert row["prompt"] == prompts.render(prompts.mcq_messages("Which drug?", OPTIONS))
    assert row["completion"] == "<analysis>Because.</analysis>\n<answer>B: Heparin</answer><end_of_turn>"


def test_parse_well_formed():
    p = prompts.parse_mcq("<analysis>Clot risk.</analysis>\n<answer>B: Heparin</answer>", OPTIONS)
    assert (p.choice, p.analysis, p.answer, p.well_formed) == ("B", "Clot risk.", "B: Heparin", True)


def test_parse_accepts_option_text_and_parenthesised_letters():
    assert prompts.parse_mcq("<analysis>x</analysis><answer>warfarin</answer>", OPTIONS).choice == "C"
    assert prompts.parse_mcq("<analysis>x</analysis><answer>(a)</answer>", OPTIONS).choice == "A"


def test_parse_never_invents_a_choice():
    for text in ["", "The answer is B", "<analysis>x</analysis><answer>E: Other</answer>",
                 "<answer>Bleeding</answer>", "<analysis>unfinished"]:
        p = prompts.parse_mcq(text, OPTIONS)
        assert p.choice is None and not p.well_formed, text


def test_parse_flags_missing_closing_tags_as_not_well_formed():
    p = prompts.parse_mcq("<analysis>x</analysis><answer>A: Aspirin", OPTIONS)
    assert p.choice == "A" and not p.well_formed


def test_grammar_lists_exactly_the_options():
    g = prompts.mcq_grammar({"A": 'say "hi"', "B": "two"})
    assert 'choice ::= "A: say \\"hi\\"" | "B: two"' in g
    assert g.startswith('root ::= "<analysis>"')


def test_forced_choice_schema_enumerates_keys():
    messages, schema = prompts.forced_choice_messages("Q?", OPTIONS, "partial reasoning")
    assert schema["properties"]["choice"]["enum"] == ["A", "B", "C"]
    assert messages[1] == {"role": "assistant", "content": "<analysis>partial reasoning</analysis>"}


def test_summarize_styles_and_word_limit():
    for style in ("brief", "bullets", "soap"):
        content = prompts.summarize_messages("Pt has HTN.", style, 50)[0]["content"]
        assert "in at most 50 words" in content and "Pt has HTN." in content
    assert "SOAP" in prompts.summarize_messages("x", "soap")[0]["content"]


def test_note_qa_contains_note_and_instruction():
    content = prompts.note_qa_messages("Metformin 500 mg.", "Which drug?")[0]["content"]
    assert "[Note Begin]\nMetformin 500 mg.\n[Note End]" in content and "Which drug?" in content


@pytest.mark.parametrize("fmt", ["gemma", "chatml"])
def test_ollama_template_renders_exactly_like_render(fmt, tmp_path):
    """Ollama applies the Modelfile TEMPLATE with Go's text/template; run the real thing where Go is installed."""
    if shutil.which("go") is None:
        if os.environ.get("MEDGPT_REQUIRE_GO") == "1":  # CI: ./medgpt.sh test installs Go; a skip would hide it
            pytest.fail("Go toolchain not installed and MEDGPT_REQUIRE_GO=1 (apt-get install golang-go)")
        pytest.skip("Go toolchain not installed (apt-get install golang-go)")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Dose?"}]
    if fmt == "chatml":
        messages = messages[1:]
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"template": prompts.OLLAMA_TEMPLATES[fmt], "messages": messages}))
    out = subprocess.run(["go", "run", str(GO_RENDER), str(case)], capture_output=True, text=True,
                         env={**os.environ, "GOCACHE": str(tmp_path / "gocache"), "GOFLAGS": "-mod=mod"})
    assert out.returncode == 0, out.stderr
    assert out.stdout == prompts.render(messages, fmt)


def test_option_named_finds_the_one_option_an_analysis_names():
    options = {"A": "Aspirin", "B": "Heparin", "C": "Aspirin and heparin", "D": "No"}
    assert prompts.option_named("Heparin acts at once.", options) == "B"
    assert prompts.option_named("Give aspirin and heparin together.", options) is None  # names A, B and C
    assert prompts.option_named("No: aspirin.", options) == "A"  # "No" is too short a word to count
    assert prompts.option_named("heparinoid", options) is None  # whole words only
    assert prompts.option_named("", options) is None
