"""Property-based fuzzing of the whole HTTP API from its own ``/openapi.json`` (schemathesis over hypothesis).

Every operation the schema lists gets generated requests, valid and not: no response may be a server error, and
every response must match the schema (a documented status code, the declared content type, a body of the
declared shape). The app is the real one on the real GGUF through the real llama.cpp engine; its limits are made
small (a few generated tokens, short texts) so that the requests the fuzzer makes valid cost little, and the
schema states those limits, so the fuzzer also probes just past them.
"""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.config import SchemathesisConfig

from api.main import create_app
from medgpt.engines.llamacpp import LlamaCppEngine
from medgpt.settings import Limits, LlamaCppSettings, ModelSpec, RateLimits, Settings, project_root

pytestmark = pytest.mark.slow

#: Examples per operation: enough to reach every field's bounds and the invalid shapes; each valid generating
#: request costs a fraction of a second with these limits.
EXAMPLES = 30

MODELS = project_root() / "models"
#: The shipped default (base + adapter): the base model's answers are mostly echoes, refused with a 502.
MEDGPT = ModelSpec(name="medgpt", path=MODELS / "gemma-3-270m-q4_k_m.gguf",
                   adapter=MODELS / "adapters" / "medgpt-lora.gguf", n_ctx=2048)  # fmt: skip
# Built at import: schemathesis reads the schema when the module is collected (its fixture-based loader does not
# run under this pytest). The engine loads the GGUF only when the first request needs it.
ENGINE = LlamaCppEngine([MEDGPT], LlamaCppSettings(n_threads=2))
APP = create_app(
    Settings(
        engine="llamacpp",
        default_model="medgpt",
        models=[MEDGPT],
        limits=Limits(
            max_tokens=8,
            default_max_tokens=8,
            max_text_chars=1_500,
            max_question_chars=400,
            max_option_chars=200,
            max_request_tokens=64,
            generation_timeout=300,
            request_timeout=300,
        ),
        rate_limits=RateLimits(requests_per_minute=0, tokens_per_minute=0),
    ),
    ENGINE,
)
#: A 413 is a rejection too (a text over this server's limit, which the schema states as maxLength), and a
#: schema-valid request may still get one: whether a text fits the model's context, or a long summary the
#: per-request work budget, depends on its tokens, which no schema can state.
#: On /v1/chat/completions a 400 too: a ``response_format`` schema is any JSON object to the OpenAPI schema, but the
#: server takes only bounded ones its converter supports (medgpt/schema_limits.py), which no schema can state.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {"expected-statuses": [400, 401, 404, 413, 422]},
            "positive_data_acceptance": {"expected-statuses": ["2xx", 401, 404, 413, 429, "5xx"]},
        },
        "operations": [{
            "include-path": "/v1/chat/completions",
            "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", 400, 401, 404, 413, 429, "5xx"]}},
        }],
    }
)  # fmt: skip
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)


@pytest.fixture(scope="module", autouse=True)
def _close_engine(gguf_path):
    yield
    asyncio.run(ENGINE.aclose())


@schema.parametrize()
@hypothesis_settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_every_response_matches_the_schema(case):
    case.call_and_validate()
