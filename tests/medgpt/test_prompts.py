"""The one prompt module: prompt texts, training rows, parsing and the MCQ grammar's text."""

from pathlib import Path

from medgpt import prompts, templates

GO_RENDER = Path(__file__).parent / "gotemplate" / "main.go"

OPTIONS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin"}


def test_training_example_prompt_is_the_inference_prompt_byte_for_byte():
    row = prompts.mcq_training_example("Which drug?", OPTIONS, "B", "Because.")
    assert row["prompt"] == templates.render(prompts.mcq_messages("Which drug?", OPTIONS))
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


def test_option_named_finds_the_one_option_an_analysis_names():
    options = {"A": "Aspirin", "B": "Heparin", "C": "Aspirin and heparin", "D": "No"}
    assert prompts.option_named("Heparin acts at once.", options) == "B"
    assert prompts.option_named("Give aspirin and heparin together.", options) is None  # names A, B and C
    assert prompts.option_named("No: aspirin.", options) == "A"  # "No" is too short a word to count
    assert prompts.option_named("heparinoid", options) is None  # whole words only
    assert prompts.option_named("", options) is None
