"""``/v1/chat/completions`` and ``/v1/models`` through the official ``openai`` client, against the real app served by
a real uvicorn on loopback with the real GGUF (the ``medgpt`` model: the base model answers most free-text prompts
by copying them back, which the echo guard refuses). Generations are a few tokens long.
"""

from __future__ import annotations

import json
import logging

import httpx
import openai
import pytest
from openai.types import Model
from openai.types.chat import ChatCompletion
from openai.types.chat.chat_completion import Choice

from api.main import create_app
from api.security import digest
from medgpt.settings import Admission, ApiKey, AuthSettings, RateLimits, Settings
from tests.api.test_faults import LONG as LONG_ASK
from tests.api.test_faults import serving, until

KEY = "sk-test-openai-compat-key"
QUESTION = [{"role": "user", "content": "What is hypertension?"}]
#: A string planted in a message: it must reach no log line.
PLANTED = "Zebulon Quagmire-Hathersage"
LONG = LONG_ASK["question"]


def required(model: type) -> set[str]:
    return {name for name, field in model.model_fields.items() if field.is_required()}


def client(url: str, key: str = "unused", **kw) -> openai.OpenAI:
    """The SDK pointed at the gateway; no retries, so a 429 or 503 surfaces as it is."""
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=300, **kw)


@pytest.fixture(scope="module")
def gateway_url(settings: Settings, engine):
    with serving(create_app(settings, engine)) as url:
        yield url


def test_plain_completion_and_no_message_text_in_the_log(gateway_url, caplog):
    caplog.set_level(logging.DEBUG)
    messages = [{"role": "system", "content": f"The patient is {PLANTED}."}, *QUESTION]
    r = client(gateway_url).chat.completions.create(model="medgpt", messages=messages, max_tokens=8)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == "medgpt"
    (choice,) = r.choices
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert "model=medgpt prompt_tokens=" in caplog.text  # the server's log lines are captured here
    assert PLANTED not in caplog.text and choice.message.content not in caplog.text
    # counted like /ask's answers, under its own mode
    counted = httpx.get(f"{gateway_url}/metrics/").text
    assert f'medgpt_finish_total{{mode="chat",reason="{choice.finish_reason}"}}' in counted


def test_streamed_chunks_assemble_to_an_answer(gateway_url):
    chunks = list(
        client(gateway_url).chat.completions.create(
            model="medgpt",
            messages=QUESTION,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(ch.object == "chat.completion.chunk" and ch.id == chunks[0].id for ch in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [ch.choices[0].delta.content for ch in chunks[1:] if ch.choices and ch.choices[0].delta.content]
    assert "".join(deltas).strip() and len(deltas) > 1  # token by token, not one block at the end
    with_choice = [ch for ch in chunks if ch.choices]
    assert [ch.choices[0].finish_reason for ch in with_choice][-1] in ("stop", "length")
    assert not any(
        ch.choices[0].finish_reason for ch in with_choice[:-1]
    )  # the finish reason comes once, last
    usage = chunks[-1].usage  # include_usage: a last chunk without choices carries it
    assert chunks[-1].choices == [] and 0 < usage.completion_tokens <= 8 and usage.prompt_tokens > 0


def test_the_stream_is_data_lines_only_ending_with_done(gateway_url):
    body = {"model": "medgpt", "messages": QUESTION, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{gateway_url}/v1/chat/completions", json=body, timeout=300) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [
            line for line in r.iter_lines() if line and not line.startswith(":")
        ]  # ":" lines: keep-alive pings
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_non_streamed_response_validates_against_the_openai_schema(gateway_url):
    r = httpx.post(f"{gateway_url}/v1/chat/completions", timeout=300,
                   json={"model": "medgpt", "messages": QUESTION, "max_completion_tokens": 4})  # fmt: skip
    assert r.status_code == 200
    body = r.json()
    # every field the SDK's own pydantic models of the schema require, and values of their types
    assert required(ChatCompletion) <= body.keys() and required(Choice) <= body["choices"][0].keys()
    completion = ChatCompletion.model_validate(body)
    assert completion.object == "chat.completion" and completion.choices[0].message.role == "assistant"
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert 0 < completion.usage.completion_tokens <= 4


def test_json_schema_response_format_is_decoded_under(gateway_url):
    schema = {"type": "object", "properties": {"diagnosis": {"type": "string", "maxLength": 24}},
              "required": ["diagnosis"]}  # fmt: skip
    r = client(gateway_url).chat.completions.create(
        model="medgpt",
        max_tokens=48,
        messages=[
            {"role": "user", "content": "Fever, cough and a lobar infiltrate: the diagnosis, as JSON."}
        ],
        response_format={"type": "json_schema", "json_schema": {"name": "dx", "schema": schema}},
    )
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    assert set(json.loads(r.choices[0].message.content)) == {"diagnosis"}


def test_a_prompt_over_the_context_is_a_413(gateway_url):
    long = [{"role": "user", "content": "fever " * 3000}]  # over the medgpt model's 2,048-token context
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway_url).chat.completions.create(model="medgpt", messages=long, max_tokens=4)
    assert caught.value.status_code == 413 and caught.value.code == "context_length_exceeded"


def test_unknown_model_is_not_found(gateway_url):
    with pytest.raises(openai.NotFoundError) as caught:
        client(gateway_url).chat.completions.create(model="no-such-model", messages=QUESTION, max_tokens=4)
    assert caught.value.code == "model_not_found" and caught.value.type == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        client(gateway_url).models.retrieve("no-such-model")


def test_models_lists_the_available_models(gateway_url):
    models = client(gateway_url).models.list().data
    # the configured models whose weights exist (the one without weights is not offered)
    assert {m.id for m in models} == {"gemma3-270m", "gemma3-270m-2k", "medgpt"}
    assert all(isinstance(m, Model) and m.owned_by == "medgpt" and m.created > 0 for m in models)
    assert client(gateway_url).models.retrieve("medgpt").id == "medgpt"


@pytest.mark.parametrize("extra,param", [
    ({"n": 2}, "n"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"max_tokens": 100_000}, None),
    ({"temperature": 3}, "temperature"),
], ids=["n", "tools", "max_tokens", "temperature"])  # fmt: skip
def test_what_cannot_be_honoured_is_a_400_in_openai_shape(gateway_url, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway_url).chat.completions.create(model="medgpt", messages=QUESTION, **extra)
    assert caught.value.type == "invalid_request_error" and caught.value.param == param
    assert caught.value.message


@pytest.mark.parametrize("extra,param", [
    ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "modalities"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"prediction": {"type": "content", "content": "Hypertension is"}}, "prediction"),
    ({"parallel_tool_calls": True}, "parallel_tool_calls"),
    ({"web_search_options": {}}, "web_search_options"),
], ids=["modalities", "audio", "prediction", "parallel_tool_calls", "web_search_options"])  # fmt: skip
def test_openai_parameters_medgpt_cannot_honour_are_refused(gateway_url, extra, param):
    """Named OpenAI parameters that change what the client gets are a 400 naming them, not a silent 200 (issue
    21); their "off" values and fields OpenAI does not define are accepted (below)."""
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway_url).chat.completions.create(model="medgpt", messages=QUESTION, max_tokens=1, **extra)
    assert caught.value.type == "invalid_request_error" and caught.value.param == param
    assert "not supported" in caught.value.message


def test_the_off_values_and_vendor_extras_are_accepted(gateway_url):
    done = client(gateway_url).chat.completions.create(
        model="medgpt", messages=QUESTION, max_tokens=1, modalities=["text"], parallel_tool_calls=False,
        extra_body={"some_vendor_extension": {"x": 1}},
    )  # fmt: skip
    assert done.choices[0].finish_reason in ("stop", "length")


def test_ask_keeps_its_own_error_format(gateway_url):
    r = httpx.post(f"{gateway_url}/ask", json={"question": "", "model": "medgpt"})
    assert r.status_code == 422 and set(r.json()) == {"detail"}


def test_with_keys_on_a_key_is_needed(settings, engine):
    keyed = settings.model_copy(
        update={"auth": AuthSettings(required=True, keys=[ApiKey(name="clinic-a", sha256=digest(KEY))])}
    )
    with serving(create_app(keyed, engine)) as url:
        no_key = {"Authorization": openai.omit}  # the SDK sends no key at all
        for key, headers in (("unused", no_key), ("sk-not-a-key", {})):
            with pytest.raises(openai.AuthenticationError) as caught:
                client(url, key).chat.completions.create(model="medgpt", messages=QUESTION, max_tokens=4,
                                                         extra_headers=headers)  # fmt: skip
            # the server's own sentence says which case it saw (the SDK's recorded request no longer shows the key)
            assert ("is required" if headers is no_key else "is not valid") in caught.value.message
            assert caught.value.response.headers["www-authenticate"] == "Bearer"
            assert caught.value.code == "invalid_api_key" and KEY not in caught.value.response.text
            with pytest.raises(openai.AuthenticationError):
                client(url, key).models.list(extra_headers=headers)
        r = client(url, KEY).chat.completions.create(model="medgpt", messages=QUESTION, max_tokens=4)
        assert r.choices[0].message.content.strip()
        assert "medgpt" in {m.id for m in client(url, KEY).models.list().data}


def test_over_the_rate_limit_is_a_429_with_retry_after(settings, engine):
    limited = settings.model_copy(
        update={"rate_limits": RateLimits(requests_per_minute=1, tokens_per_minute=0)}
    )
    with serving(create_app(limited, engine)) as url:
        client(url).models.list()
        with pytest.raises(openai.RateLimitError) as caught:
            client(url).chat.completions.create(model="medgpt", messages=QUESTION, max_tokens=4)
        assert int(caught.value.response.headers["retry-after"]) >= 1
        assert caught.value.code == "rate_limit_exceeded"


def test_a_stream_holds_its_turn_of_the_admission_queue_until_closed(settings, engine):
    """The same queue as /ask: with one turn and no waiting room, a second request while a stream runs is a 503
    with Retry-After at once; once the client closes the stream, its turn is free and the next one is served."""
    app = create_app(
        settings.model_copy(update={"admission": Admission(max_concurrent=1, max_waiting=0)}), engine
    )
    admission = app.state.gateway.admission
    with serving(app) as url:
        c = client(url)
        # temperature 2 with this seed wanders to max_tokens (tests/api/test_faults.py): it runs until closed
        stream = c.chat.completions.create(model="gemma3-270m", stream=True, max_tokens=1024, temperature=2.0,
                                           seed=1, messages=[{"role": "user", "content": LONG}])  # fmt: skip
        next(iter(stream))
        assert admission.running == 1
        with pytest.raises(openai.InternalServerError) as caught:
            c.chat.completions.create(model="medgpt", messages=QUESTION, max_tokens=4)
        assert caught.value.status_code == 503 and caught.value.code == "overloaded"
        assert int(caught.value.response.headers["retry-after"]) >= 1
        stream.close()
        until(lambda: admission.running == 0, 30, "the closed stream to give its turn back")
        assert (
            c.chat.completions.create(model="medgpt", messages=QUESTION, max_tokens=4)
            .choices[0]
            .message.content
        )


def test_an_error_after_the_stream_started_is_an_error_line_the_sdk_raises(settings, engine):
    """A generation that passes the timeout after its first tokens were sent: the 200 is gone, so the error is a
    ``data: {"error": ...}`` line, which the SDK raises as an APIError with OpenAI's body. A short question answers
    its first token within 0.1 s, and at temperature 2 the answer does not end early whatever tokens a CPU
    samples: 0 of 40 seeds ended within 150 tokens (llama-cpp-python, this prompt), more than 2 s at the fastest
    rate measured here (75 tok/s).
    (A long prompt's greedy-ish answer could end on its own inside the timeout on a fast machine.)"""
    app = create_app(settings.model_copy(update={"limits": settings.limits.model_copy(
        update={"generation_timeout": 2.0})}), engine)  # fmt: skip
    with serving(app) as url:
        stream = client(url).chat.completions.create(
            model="gemma3-270m", stream=True, max_tokens=1024, temperature=2.0, seed=1, messages=QUESTION
        )
        received: list = []
        with pytest.raises(openai.APIError) as caught:
            received.extend(stream)  # keeps the chunks that came before the error
        assert received and received[0].choices[0].delta.role == "assistant"  # the stream had started
        assert caught.value.body["code"] == "timeout" and caught.value.body["type"] == "server_error"
        assert (
            caught.value.message == "generation exceeded 2 s"
        )  # the engine's own sentence, as /ask gives it
