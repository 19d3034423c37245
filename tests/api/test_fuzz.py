"""Property-based fuzzing of the whole HTTP API from its own ``/openapi.json`` (schemathesis over hypothesis).

Every operation the schema lists gets generated requests, valid and not: no response may be a server error, and
every response must match the schema (a documented status code, the declared content type, a body of the
declared shape). The app is the real one on the real GGUF through the real llama.cpp engine; its limits are made
small (a few generated tokens, short texts) so that the requests the fuzzer makes valid cost little, and the
schema states those limits, so the fuzzer also probes just past them.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from medgpt.settings import Limits, RateLimits

#: Examples per operation: enough to reach every field's bounds and the invalid shapes; each valid generating
#: request costs a fraction of a second with these limits.
EXAMPLES = 30


@pytest.fixture(scope="module")
def fuzz_app(settings, engine):
    from api.main import create_app

    small = settings.model_copy(
        update={
            "default_model": "medgpt",
            "limits": Limits(
                max_tokens=8,
                default_max_tokens=8,
                max_text_chars=1_500,
                max_question_chars=400,
                max_option_chars=200,
                max_request_tokens=64,
                generation_timeout=300,
                request_timeout=300,
            ),
            "rate_limits": RateLimits(requests_per_minute=0, tokens_per_minute=0),
        }
    )
    return create_app(small, engine)


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_app, gguf_path):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@schema.parametrize()
@hypothesis_settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_every_response_matches_the_schema(case):
    case.call_and_validate()
