"""The embedded llama.cpp engine on the real Gemma 3 270M GGUF."""

import asyncio
import json
import time

import pytest

from medgpt import prompts
from medgpt.engines import (
    GenerationRequest,
    GenerationTimeout,
    ModelNotFound,
    PromptTooLong,
    complete,
)

HELLO = [{"role": "user", "content": "Name one symptom of influenza."}]


def run(coro):
    return asyncio.run(coro)


def test_streams_text_then_a_done_chunk_with_usage(engine):
    async def go():
        return [c async for c in engine.generate(GenerationRequest("gemma3-270m", HELLO, max_tokens=12))]

    chunks = run(go())
    assert any(c.text for c in chunks[:-1])
    last = chunks[-1]
    assert last.done and last.prompt_tokens > 5 and 1 <= last.completion_tokens <= 12
    assert last.finish_reason in {"stop", "length"}


def test_seeded_sampling_is_reproducible(engine):
    req = GenerationRequest("gemma3-270m", HELLO, max_tokens=16, temperature=0.9, seed=7)
    assert run(complete(engine, req)).text == run(complete(engine, req)).text


def test_grammar_constrains_the_mcq_format(engine):
    options = {"A": "Insulin", "B": "Metformin"}
    req = GenerationRequest(
        "gemma3-270m",
        prompts.mcq_messages("First-line drug for type 2 diabetes?", options),
        max_tokens=160,
        grammar=prompts.mcq_grammar(options),
    )
    text = run(complete(engine, req)).text
    assert text.startswith("<analysis>")
    parsed = prompts.parse_mcq(text, options)
    # Either it finished (then the grammar guarantees a valid option) or it ran out of tokens inside the analysis.
    assert parsed.choice in options or "</analysis>" not in text


def test_json_schema_constrains_output(engine):
    _, schema = prompts.forced_choice_messages("Q?", {"A": "x", "B": "y", "C": "z"}, "")
    req = GenerationRequest("gemma3-270m", HELLO, max_tokens=20, json_schema=schema)
    assert json.loads(run(complete(engine, req)).text)["choice"] in {"A", "B", "C"}


def test_unknown_and_missing_models_are_not_found(engine):
    for name in ("no-such-model", "missing-weights"):
        with pytest.raises(ModelNotFound):
            run(complete(engine, GenerationRequest(name, HELLO)))


def test_prompt_longer_than_context_is_refused(engine):
    long = [{"role": "user", "content": "fever " * 3000}]
    with pytest.raises(PromptTooLong):
        run(complete(engine, GenerationRequest("gemma3-270m", long, max_tokens=8)))


def test_timeout_raises_and_frees_the_model_for_the_next_request(engine):
    with pytest.raises(GenerationTimeout):
        run(complete(engine, GenerationRequest("gemma3-270m", HELLO, max_tokens=400, timeout=0.3)))
    started = time.perf_counter()
    out = run(complete(engine, GenerationRequest("gemma3-270m", HELLO, max_tokens=4)))
    assert out.completion_tokens >= 1
    # the abandoned generation stopped at its next token instead of writing all 400
    assert time.perf_counter() - started < 20


def test_concurrent_requests_are_serialized_safely(engine):
    async def go():
        reqs = [GenerationRequest("gemma3-270m", HELLO, max_tokens=8, seed=i) for i in range(4)]
        return await asyncio.gather(*(complete(engine, r) for r in reqs))

    results = run(go())
    assert len(results) == 4 and all(r.completion_tokens >= 1 for r in results)


def test_models_lists_only_models_with_weights(engine):
    names = {m.name for m in run(engine.models())}
    assert "gemma3-270m" in names and "missing-weights" not in names


def test_count_tokens_uses_the_model_tokenizer(engine):
    n = run(engine.count_tokens("gemma3-270m", "<start_of_turn>user\nHi<end_of_turn>"))
    assert 4 <= n <= 8  # BOS + two special tokens + a few text tokens


# --- pinned weights: a GGUF or adapter whose SHA-256 is not its pin is never loaded --------------------------


def test_weights_are_loaded_only_when_their_digests_match_the_pins(gguf_path, settings):
    from medgpt.engines.llamacpp import LlamaCppEngine
    from medgpt.models import file_sha256
    from medgpt.settings import ModelSpec
    from tests.conftest import ROOT

    adapter = ROOT / "models" / "adapters" / "medgpt-lora.gguf"
    right, wrong = file_sha256(gguf_path), "0" * 64
    engine = LlamaCppEngine([
        ModelSpec(name="pinned", path=gguf_path, sha256=right, n_ctx=256),
        ModelSpec(name="swapped", path=gguf_path, sha256=wrong, n_ctx=256),
        ModelSpec(name="swapped-adapter", path=gguf_path, sha256=right, adapter=adapter, adapter_sha256=wrong,
                  n_ctx=256),
    ], settings.llamacpp)  # fmt: skip
    try:
        for name, role in (("swapped", "GGUF"), ("swapped-adapter", "adapter")):
            with pytest.raises(ModelNotFound, match=f"its {role} is not the pinned file") as refused:
                run(complete(engine, GenerationRequest(name, HELLO, max_tokens=2)))
            assert str(gguf_path.parent) not in str(refused.value)  # no server path in what a client sees
            with pytest.raises(ModelNotFound):  # counting tokens loads the model too
                run(engine.count_tokens(name, "fever"))
        assert not engine._loaded
        out = run(complete(engine, GenerationRequest("pinned", HELLO, max_tokens=2)))
        assert out.completion_tokens >= 1 and list(engine._loaded) == ["pinned"]
        # the GGUF all three share was hashed once (its size and mtime unchanged), the adapter once
        assert len(engine._digests._cache) == 2
    finally:
        run(engine.aclose())


def test_an_unparsable_grammar_is_refused_not_a_crash(engine):
    """llama.cpp answers a grammar it cannot parse with a NULL sampler, and generating with it kills the process
    (a segfault, measured with llama-cpp-python 0.3.36): the engine compiles the grammar first and refuses it."""
    from medgpt.engines import EngineError

    with pytest.raises(EngineError, match="invalid output constraint"):
        run(complete(engine, GenerationRequest("gemma3-270m", HELLO, max_tokens=4, grammar='root ::= "a\x00b"')))
    assert run(complete(engine, GenerationRequest("gemma3-270m", HELLO, max_tokens=2))).completion_tokens >= 1
