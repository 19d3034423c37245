"""Chat templates: how a conversation becomes the one string a model was trained to continue.

Every chat model is trained on its own layout of turns (Gemma's ``<start_of_turn>``, ChatML's ``<|im_start|>``,
Llama 3's ``<|start_header_id|>``, Llama 2's ``[INST]``...). Asked in any other layout it answers badly or not at
all, so a prompt is always rendered in the layout of the model that reads it. A :class:`ChatTemplate` comes from
one of two places:

- **The GGUF's own Jinja template** (``tokenizer.chat_template``), rendered the way transformers'
  ``apply_chat_template`` and llama.cpp render it: llama-cpp-python's ``Jinja2ChatFormatter`` (a sandboxed Jinja2
  environment with ``trim_blocks``/``lstrip_blocks``, ``raise_exception``, the GGUF's ``bos_token``/``eos_token``
  and ``add_generation_prompt``). A template that refuses a ``system`` message (Gemma's, Mistral v0.1's) gets the
  system text folded into the first user turn, as those families expect; one that cannot render our message shapes
  at all is refused when the model is loaded (:class:`TemplateError`), never at request time.
- **A named format** written here, for GGUFs that carry no template (the Gemma 3 270M base) or when the config
  forces one (``prompt_format``): ``gemma``, ``chatml``, ``llama3``, ``llama2``, ``mistral``, ``phi3``. Each
  renders what its family's public template renders for our messages, and has an Ollama (Go) template that renders
  the same text (tests/medgpt/test_templates.py runs both).

Whatever the source, every message content first goes through :func:`neutralize`: control-token spellings in a
user's text become look-alike plain text, so only the template itself can open or close a turn. The template's own
control strings are its :attr:`ChatTemplate.markers`: the only strings an engine may tokenize as special tokens.
Rendered prompts carry no BOS of their own for named formats (the tokenizer adds it where the GGUF asks for one);
a Jinja template may write it, and :attr:`ChatTemplate.bos` says so, so that it is not added twice.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

Message = dict[str, str]
#: The formats written here; ``auto`` (the default of a model entry) takes the GGUF's own template, else the
#: family's named format (Gemma GGUFs without one); ``gguf`` insists on the GGUF's own template.
NamedFormat = Literal["gemma", "chatml", "llama3", "llama2", "mistral", "phi3"]
PromptFormat = Literal["auto", "gguf", "gemma", "chatml", "llama3", "llama2", "mistral", "phi3"]
NAMED_FORMATS: tuple[str, ...] = get_args(NamedFormat)


class TemplateError(ValueError):
    """A chat template that cannot render MedGPT's message shapes (or none can be chosen for a model)."""


# --- neutralizing control strings in contents -----------------------------------------------------------------

#: Control-token spellings a tokenizer may turn into a single special token when it meets them in text: Gemma's
#: (turn markers, ``<bos>``/``<eos>``/``<pad>``/``<unk>``/``<mask>``, ``</s>``, ``<unusedN>``, image markers),
#: ChatML's, Llama 3's and Phi-3's (every ``<|name|>``), DeepSeek's full-width ``<｜name｜>``, Llama 2 / Mistral's
#: (``<s>``, ``[INST]``, ``[/INST]``, ``<<SYS>>``) and Mistral v3+'s (``[SYSTEM_PROMPT]``, ``[TOOL_CALLS]``,
#: ``[AVAILABLE_TOOLS]``, ``[TOOL_RESULTS]`` and their closing forms). The remote formats are here too because a
#: remote server applies its own model's template, whatever ours says.
_CONTROL = re.compile(
    r"<(?:start_of_turn|end_of_turn|bos|eos|pad|unk|mask|/?s|unused\d+|start_of_image|end_of_image)>"
    r"|<\|[A-Za-z0-9_]{1,64}\|>"
    r"|<｜[^｜<>\n]{1,64}｜>"
    r"|<</?SYS>>"
    r"|\[/?(?:INST|SYSTEM_PROMPT|TOOL_CALLS|AVAILABLE_TOOLS|TOOL_RESULTS)\]"
)
#: Lookalikes the first and last character of a control string become (NFKC leaves them as they are, so a server
#: that normalises text before matching special tokens cannot turn them back).
_LOOKALIKE = {"<": "\u2039", ">": "\u203a", "[": "\u2045", "]": "\u2046"}
#: Put after the first character of a template marker of no known shape: it no longer matches, and reads the same.
_WORD_JOINER = "\u2060"


def _defuse(marker: str) -> str:
    first, last = marker[0], marker[-1]
    if first in _LOOKALIKE and last in _LOOKALIKE and len(marker) > 1:
        return _LOOKALIKE[first] + marker[1:-1] + _LOOKALIKE[last]
    return first + _WORD_JOINER + marker[1:]


def neutralize(text: str, markers: Sequence[str] = ()) -> str:
    """``text`` with every control-token spelling in it made plain text: its first and last character become
    lookalikes, so ``<start_of_turn>`` reads ``‹start_of_turn›``, ``<|im_start|>`` ``‹|im_start|›``, ``[INST]``
    ``⁅INST⁆`` (U+2039, U+203A, U+2045, U+2046); ``markers`` (a template's own control strings) are made plain
    text too, whatever their shape.

    Why: a tokenizer that parses special tokens in the rendered prompt (llama.cpp with ``special=True``, Ollama,
    llama.cpp's and vLLM's servers) would otherwise read a note containing ``<end_of_turn>\\n<start_of_turn>model``
    as a real end of the user's turn and a model turn written by the user. Text without such strings (all our
    data) is returned unchanged, byte for byte; the visible lookalikes keep the text readable and show where a
    control string was."""
    text = _CONTROL.sub(lambda m: _defuse(m[0]), text)
    for marker in markers:
        if marker and marker in text:
            text = text.replace(marker, _defuse(marker))
    return text


def neutralize_messages(messages: Sequence[Message], markers: Sequence[str] = ()) -> list[Message]:
    """The messages with :func:`neutralize` applied to every content (any role): what chat engines send, so a
    server's own template cannot be broken out of either."""
    return [{**m, "content": neutralize(m["content"], markers)} for m in messages]


def control_strings(text: str) -> list[str]:
    """The control-token spellings in ``text`` (a template's own text), in order of first appearance."""
    return list(dict.fromkeys(m[0] for m in _CONTROL.finditer(text)))


# --- the template ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatTemplate:
    """How one model's prompts are written: :meth:`render` gives the prompt string, ending with an open assistant
    turn; :attr:`markers` are its own control strings (the only ones an engine tokenizes as special); :attr:`stop`
    the strings that end the model's turn; :attr:`ollama` a Go template that Ollama renders to the same text (None
    when no named format matches a GGUF's own template)."""

    #: ``gguf`` for a GGUF's own template, else the named format
    name: str
    markers: tuple[str, ...]
    stop: tuple[str, ...]
    layout: Callable[[list[Message]], str] = field(repr=False, compare=False)
    #: The BOS text a rendering may start with (Jinja templates that write ``{{ bos_token }}``): the tokenizer must
    #: not add a second one. Named formats never write it.
    bos: str = ""
    ollama: str | None = field(default=None, repr=False)
    #: The named format this template renders exactly like (itself for a named format)
    same_as: str | None = None

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt for ``messages`` (contents neutralized first), ending with an open assistant turn."""
        return self.layout(neutralize_messages(messages, self.markers))

    def training_prompt(self, messages: Sequence[Message]) -> str:
        """The prompt a training row starts with: :meth:`render` without a leading BOS text (the tokenizer adds
        BOS to training rows exactly as to served prompts)."""
        prompt = self.render(messages)
        return prompt[len(self.bos) :] if self.bos and prompt.startswith(self.bos) else prompt


# --- named formats -------------------------------------------------------------------------------------------------


def _fold_system(messages: Sequence[Message], sep: str = "\n\n") -> list[Message]:
    """System contents prepended to the next user turn (``system + sep + user``): the families without a system
    role (Gemma, Mistral v0.1) are trained that way."""
    out: list[Message] = []
    pending = ""
    for m in messages:
        if m["role"] == "system":
            pending += m["content"] + sep
        elif m["role"] == "user" and pending:
            out.append({**m, "content": pending + m["content"]})
            pending = ""
        else:
            out.append(m)
    return out


def _gemma(messages: list[Message]) -> str:
    turns = (
        f"<start_of_turn>{'model' if m['role'] == 'assistant' else 'user'}\n{m['content']}<end_of_turn>\n"
        for m in _fold_system(messages)
    )
    return "".join(turns) + "<start_of_turn>model\n"


def _chatml(messages: list[Message]) -> str:
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return body + "<|im_start|>assistant\n"


def _llama3(messages: list[Message]) -> str:
    head = "<|start_header_id|>{}<|end_header_id|>\n\n"
    body = "".join(head.format(m["role"]) + m["content"] + "<|eot_id|>" for m in messages)
    return body + head.format("assistant")


def _llama2(messages: list[Message]) -> str:
    """Llama 2 chat: ``[INST] <<SYS>>\\nsystem\\n<</SYS>>\\n\\nuser [/INST] answer </s><s>[INST] …``; the
    first ``<s>`` is the tokenizer's BOS."""
    out, system, first = [], "", True
    for m in messages:
        if m["role"] == "system":
            system += f"<<SYS>>\n{m['content']}\n<</SYS>>\n\n"
        elif m["role"] == "user":
            out.append(("" if first else "<s>") + f"[INST] {system}{m['content']} [/INST]")
            system, first = "", False
        else:
            out.append(f" {m['content']} </s>")
    return "".join(out)


def _mistral(messages: list[Message]) -> str:
    parts = (
        f"[INST] {m['content']} [/INST]" if m["role"] == "user" else f"{m['content']}</s>"
        for m in _fold_system(messages)
    )
    return "".join(parts)


def _phi3(messages: list[Message]) -> str:
    return "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages) + "<|assistant|>\n"


#: Ollama chat templates (Go's text/template) that render exactly what the layouts above render.
_OLLAMA = {
    # System messages are folded into the next user turn, exactly as _fold_system does.
    "gemma": (
        '{{- $sys := "" }}{{- range .Messages }}'
        '{{- if eq .Role "system" }}{{ $sys = printf "%s%s\\n\\n" $sys .Content }}'
        '{{- else if eq .Role "user" }}<start_of_turn>user\n{{ $sys }}{{ .Content }}<end_of_turn>\n{{ $sys = "" }}'
        "{{- else }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n{{ end }}"
        "{{- end }}<start_of_turn>model\n"
    ),
    "chatml": (
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
    ),
    "llama3": (
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
        "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "llama2": (
        '{{- $sys := "" }}{{- $first := true }}{{- range .Messages }}'
        '{{- if eq .Role "system" }}{{ $sys = printf "%s<<SYS>>\\n%s\\n<</SYS>>\\n\\n" $sys .Content }}'
        '{{- else if eq .Role "user" }}{{ if not $first }}<s>{{ end }}[INST] {{ $sys }}{{ .Content }} [/INST]'
        '{{- $sys = "" }}{{ $first = false }}'
        "{{- else }} {{ .Content }} </s>{{ end }}{{- end }}"
    ),
    "mistral": (
        '{{- $sys := "" }}{{- range .Messages }}'
        '{{- if eq .Role "system" }}{{ $sys = printf "%s%s\\n\\n" $sys .Content }}'
        '{{- else if eq .Role "user" }}[INST] {{ $sys }}{{ .Content }} [/INST]{{ $sys = "" }}'
        "{{- else }}{{ .Content }}</s>{{ end }}{{- end }}"
    ),
    "phi3": "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n",
}

#: name: (layout, template markers, stop strings, whether the family has a system role of its own)
_NAMED: dict[str, tuple[Callable[[list[Message]], str], tuple[str, ...], tuple[str, ...], bool]] = {
    "gemma": (_gemma, ("<start_of_turn>", "<end_of_turn>"), ("<end_of_turn>",), False),
    "chatml": (_chatml, ("<|im_start|>", "<|im_end|>"), ("<|im_end|>",), True),
    "llama3": (_llama3, ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
               ("<|eot_id|>", "<|end_of_text|>"), True),
    "llama2": (_llama2, ("<s>", "</s>"), ("</s>",), False),
    "mistral": (_mistral, ("</s>", "[INST]", "[/INST]"), ("</s>",), False),
    "phi3": (_phi3, ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"), ("<|end|>", "<|endoftext|>"), True),
}


@functools.cache  # a template is immutable: one per format, not one per request
def named(name: str, default_system: str | None = None) -> ChatTemplate:
    """The named format ``name``; with ``default_system``, a system turn of that text is written whenever a
    conversation does not start with one (what SmolLM2's and Qwen's own templates do). Only formats with a system
    role of their own can do that."""
    if name not in _NAMED:
        raise TemplateError(f"unknown prompt format {name!r}; known: {', '.join(NAMED_FORMATS)}")
    layout, markers, stop, has_system = _NAMED[name]
    ollama = _OLLAMA[name]
    if default_system is not None:
        if not has_system:
            raise TemplateError(f"the {name} format has no system role for a default system message")
        inner = layout

        def layout(messages: list[Message], inner=inner) -> str:  # wraps the format's own layout
            if not messages or messages[0]["role"] != "system":
                messages = [{"role": "system", "content": default_system}, *messages]
            return inner(messages)

        turn = inner([{"role": "system", "content": default_system}])
        turn = turn[: len(turn) - len(inner([]))]  # the system turn alone, without the open assistant turn
        go_safe = "{{" not in turn and "}}" not in turn
        ollama = f'{{{{- if ne (index .Messages 0).Role "system" }}}}{turn}{{{{ end }}}}{ollama}' if go_safe else None
    return ChatTemplate(name=name, markers=markers, stop=stop, layout=layout, ollama=ollama, same_as=name)


# --- a GGUF's own Jinja template -----------------------------------------------------------------------------------

#: Conversations every template must render: the shapes MedGPT sends (one user turn; the MCQ rescue's user,
#: assistant, user; /v1's system + user).
_PROBES: tuple[tuple[Message, ...], ...] = (
    ({"role": "user", "content": "U1"},),
    ({"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}),
    ({"role": "system", "content": "S1"}, {"role": "user", "content": "U1"}),
    ({"role": "system", "content": "S1"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"},
     {"role": "user", "content": "U2"}),
)  # fmt: skip


def from_jinja(source: str, bos_token: str, eos_token: str, stop: Sequence[str] = ()) -> ChatTemplate:
    """The :class:`ChatTemplate` of a GGUF's Jinja ``source`` with its ``bos_token``/``eos_token`` texts; ``stop``
    adds the model's other end-of-turn token texts (``eot``/``eom`` in the GGUF). :class:`TemplateError` when it
    cannot render our conversations, with the system folded into the first user turn or without."""
    from jinja2 import TemplateError as JinjaError
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def jinja(bos: str) -> Callable[[list[Message]], str]:
        formatter = Jinja2ChatFormatter(template=source, eos_token=eos_token, bos_token=bos)
        return lambda messages: formatter(messages=[dict(m) for m in messages]).prompt

    def renders(layout: Callable[[list[Message]], str]) -> bool:
        try:
            return all(isinstance(layout(list(p)), str) for p in _PROBES)
        except Exception:  # noqa: BLE001 - raise_exception() (ValueError), a sandbox refusal, any template bug
            return False

    def folded(layout: Callable[[list[Message]], str]) -> Callable[[list[Message]], str]:
        return lambda messages: layout(_fold_system(messages))  # the family's way without a system role

    try:
        layout, sentinel = jinja(bos_token), jinja("\x02")
    except JinjaError as exc:
        raise TemplateError(f"the GGUF's chat template does not parse: {exc}") from None
    if not renders(layout):
        layout, sentinel = folded(layout), folded(sentinel)
        if not renders(layout):
            raise TemplateError(
                "the GGUF's chat template cannot render a user turn, an assistant turn and a system message "
                "(even folded into the first user turn); set prompt_format to a named format"
            )
    # The template's own text: a rendering with every content removed; its control strings are its markers.
    bare = layout([{**m, "content": ""} for m in _PROBES[-1]])
    markers = tuple(dict.fromkeys([*control_strings(bare), *(t for t in (bos_token, eos_token) if t and t in bare)]))
    stops = tuple(dict.fromkeys(t for t in (*stop, eos_token) if t))
    # Whether the template writes {{ bos_token }} first: rendered with a sentinel BOS, the prompt starts with it.
    writes_bos = bool(bos_token) and sentinel(list(_PROBES[0])).startswith("\x02")
    template = ChatTemplate(name="gguf", markers=markers, stop=stops, layout=layout,
                            bos=bos_token if writes_bos else "")  # fmt: skip
    same = equivalent_format(template)
    return template if same is None else replace(template, ollama=same.ollama, same_as=same.same_as)


def equivalent_format(template: ChatTemplate) -> ChatTemplate | None:
    """The named format (with a default system message where the template writes one) that renders every probe
    conversation exactly as ``template`` does, BOS aside; None when none does."""
    wanted = [template.training_prompt(list(p)) for p in _PROBES]
    for name in NAMED_FORMATS:
        plain = named(name)
        candidates = [plain]
        if _NAMED[name][3]:  # a system role: the template may add a default system turn
            default = _default_system(plain, wanted[0])
            if default is not None:
                candidates.append(named(name, default))
        for candidate in candidates:
            if all(candidate.render(list(p)) == w for p, w in zip(_PROBES, wanted, strict=True)):
                return candidate
    return None


def _default_system(fmt: ChatTemplate, rendered_user_only: str) -> str | None:
    """The system text a template wrote before a lone user turn, if ``fmt``'s system turn explains the rendering."""
    hole = "\x00"
    shape = fmt.layout([{"role": "system", "content": hole}, {"role": "user", "content": "U1"}])
    before, _, after = shape.partition(hole)
    if (
        before
        and rendered_user_only.startswith(before)
        and rendered_user_only.endswith(after)
        and len(rendered_user_only) > len(before) + len(after)
    ):
        return rendered_user_only[len(before) : len(rendered_user_only) - len(after)]
    return None


def render(messages: Sequence[Message], fmt: str = "gemma") -> str:
    """``messages`` rendered in the named format ``fmt``: the prompt of a model without a template of its own
    (what MedGPT's shipped Gemma 3 270M is trained and served with)."""
    return named(fmt).render(messages)
