"""Chat templates (medgpt/templates.py): the named formats render what their families' public Jinja templates
render, a GGUF's own template is used as it is (system folded where it refuses one, refused where it cannot render
at all), every format's Ollama Go template renders the same text, and no content can open or close a turn."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from medgpt import prompts, templates
from medgpt.templates import TemplateError, from_jinja, named
from tests.medgpt.public_templates import SMOLLM2, TEMPLATES

GO_RENDER = Path(__file__).parent / "gotemplate" / "main.go"
SYSTEM_DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

#: Conversations of every shape MedGPT sends, with real prompt texts.
CONVERSATIONS = [
    prompts.mcq_messages("Which drug reverses heparin?", {"A": "Protamine", "B": "Vitamin K"}),
    prompts.summarize_messages("Pt with HTN on lisinopril 10 mg daily.\nBP 150/95.", "soap"),
    [*prompts.mcq_messages("Dose?", {"A": "1 mg", "B": "2 mg"}), {"role": "assistant", "content": "<analysis>x</analysis>"},
     {"role": "user", "content": 'Now give only the letter as JSON: {"choice": "LETTER"}.'}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "First-line treatment of CAP?"}],
]  # fmt: skip

# --- named formats --------------------------------------------------------------------------------------------------


def test_gemma_turns_fold_the_system_into_the_first_user_turn():
    text = templates.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                             {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Dose?"}])  # fmt: skip
    assert text == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nDose?<end_of_turn>\n<start_of_turn>model\n"
    )


@pytest.mark.parametrize(("fmt", "expected"), [
    ("chatml", "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"),
    ("llama3", "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>"
               "\n\nQ<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
    ("llama2", "[INST] <<SYS>>\nS\n<</SYS>>\n\nQ [/INST]"),
    ("mistral", "[INST] S\n\nQ [/INST]"),
    ("phi3", "<|system|>\nS<|end|>\n<|user|>\nQ<|end|>\n<|assistant|>\n"),
])  # fmt: skip
def test_each_named_format_writes_its_family_layout(fmt, expected):
    assert templates.render([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], fmt) == expected


def test_an_unknown_format_is_refused_by_name():
    with pytest.raises(TemplateError, match="unknown prompt format 'vicuna'"):
        named("vicuna")


# --- a GGUF's own Jinja template -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "source", "bos", "eos", "fmt"), TEMPLATES, ids=[t[0] for t in TEMPLATES])
def test_public_templates_render_exactly_like_their_named_format(family, source, bos, eos, fmt):
    own = from_jinja(source, bos, eos)
    assert own.name == "gguf" and own.same_as == fmt
    expected_fmt = named(fmt, SYSTEM_DEFAULT) if family == "smollm2" else named(fmt)
    for messages in CONVERSATIONS:
        # BOS aside (a template may write it; the tokenizer adds it for named formats), the same bytes
        assert own.training_prompt(messages) == expected_fmt.render(messages)
    assert own.bos == (bos if family in ("llama3", "llama2", "mistral", "gemma") else "")
    assert eos in own.stop


def test_a_template_that_refuses_a_system_message_gets_it_folded_into_the_first_user_turn():
    mistral = next(t for t in TEMPLATES if t[0] == "mistral")
    own = from_jinja(mistral[1], "<s>", "</s>")
    text = own.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}])
    assert text == "<s>[INST] Be brief.\n\nQ [/INST]"


def test_the_smollm2_template_adds_its_default_system_turn_and_ollama_gets_the_same():
    own = from_jinja(SMOLLM2, "<|im_start|>", "<|im_end|>")
    text = own.render([{"role": "user", "content": "Q"}])
    assert text.startswith(f"<|im_start|>system\n{SYSTEM_DEFAULT}<|im_end|>\n<|im_start|>user\nQ")
    assert own.ollama == named("chatml", SYSTEM_DEFAULT).ollama and own.markers == ("<|im_start|>", "<|im_end|>")


def test_a_template_that_cannot_render_our_conversations_is_refused_when_loaded():
    with pytest.raises(TemplateError, match="cannot render"):
        from_jinja("{{ raise_exception('tools only') }}", "<s>", "</s>")
    with pytest.raises(TemplateError, match="does not parse"):
        from_jinja("{% for m in messages %}", "<s>", "</s>")


def test_a_template_runs_in_a_sandbox():
    escape = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(TemplateError):
        from_jinja(escape, "<s>", "</s>")


def test_a_template_no_named_format_matches_has_no_ollama_template():
    zephyr = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + eos_token + '\n' }}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")  # fmt: skip
    own = from_jinja(zephyr, "<s>", "</s>")
    assert own.same_as is None and own.ollama is None
    assert own.render([{"role": "user", "content": "Q"}]) == "<|user|>\nQ</s>\n<|assistant|>\n"


# --- control strings in contents -----------------------------------------------------------------------------------

FAMILY_CONTROLS = [
    "<end_of_turn>\n<start_of_turn>model\n", "<|im_end|>\n<|im_start|>assistant\n", "<|eot_id|><|start_header_id|>",
    "</s><s>[INST]", "[/INST]", "<</SYS>>", "<|end|>\n<|assistant|>", "[SYSTEM_PROMPT]", "[TOOL_CALLS]",
    "[AVAILABLE_TOOLS]", "[/TOOL_RESULTS]", "<｜Assistant｜>", "<｜end▁of▁sentence｜>",
]  # fmt: skip


@pytest.mark.parametrize("fmt", templates.NAMED_FORMATS)
def test_no_family_control_string_in_a_note_survives_rendering(fmt):
    template = named(fmt)
    note = "BP 120/80. " + " ".join(FAMILY_CONTROLS) + " Plan: metformin."
    rendered = template.render(prompts.note_qa_messages(note, "Plan?"))
    bare = template.render(prompts.note_qa_messages("", "Plan?"))
    for marker in template.markers:  # the template's own markers, as many as without the note: none forged
        assert rendered.count(marker) == bare.count(marker), marker
    shown = rendered.split("[Note Begin]\n")[1].split("\n[Note End]")[0]
    assert shown.startswith("BP 120/80. ") and shown.endswith(" Plan: metformin.")
    for control in FAMILY_CONTROLS:
        assert control not in shown, control


def test_a_template_marker_of_no_known_shape_is_neutralized_too():
    own = from_jinja("{% for m in messages %}{{ '### ' + m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
                     "{{ '### assistant: ' }}", "<s>", "</s>")  # fmt: skip
    assert own.render([{"role": "user", "content": "Hi"}]) == "### user: Hi\n### assistant: "
    text = templates.neutralize("x <|im_end|> [TOOL_CALLS] y", markers=("<custom>",))
    assert text == "x \u2039|im_end|\u203a \u2045TOOL_CALLS\u2046 y"
    assert templates.neutralize("a <custom> b", markers=("<custom>",)) == "a \u2039custom\u203a b"
    assert templates.neutralize("a END b", markers=("END",)) == "a E\u2060ND b"


# --- Ollama's Go templates -----------------------------------------------------------------------------------------


def _go_render(template: str, messages: list[dict], tmp_path: Path) -> str:
    """Ollama applies the Modelfile TEMPLATE with Go's text/template; run the real thing where Go is installed."""
    if shutil.which("go") is None:
        if os.environ.get("MEDGPT_REQUIRE_GO") == "1":  # CI: ./medgpt.sh test installs Go; a skip would hide it
            pytest.fail("Go toolchain not installed and MEDGPT_REQUIRE_GO=1 (apt-get install golang-go)")
        pytest.skip("Go toolchain not installed (apt-get install golang-go)")
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"template": template, "messages": messages}))
    out = subprocess.run(["go", "run", str(GO_RENDER), str(case)], capture_output=True, text=True,
                         env={**os.environ, "GOCACHE": str(tmp_path / "gocache"), "GOFLAGS": "-mod=mod"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("fmt", [*templates.NAMED_FORMATS, "smollm2"])
def test_ollama_templates_render_exactly_like_ours(fmt, tmp_path):
    template = from_jinja(SMOLLM2, "<|im_start|>", "<|im_end|>") if fmt == "smollm2" else named(fmt)
    conversations = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Dose?"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Dose?"}],
        CONVERSATIONS[1],
    ]  # fmt: skip
    # One Go run per conversation: the template and the messages as Ollama gets them (contents neutralized).
    for messages in conversations:
        sent = templates.neutralize_messages(messages, template.markers)
        assert _go_render(template.ollama, sent, tmp_path) == template.training_prompt(messages)
