"""The OpenAPI schema states this server's configured limits, not the code's defaults.

Request models are classes fixed at import, but the limits come from each app's settings (``limits`` in
``config/medgpt.yaml``): the generated schema is patched once per app, so a client (or a fuzzer) reading
``/openapi.json`` sees the ``max_tokens`` maximum and the text lengths this server enforces, and a schema-valid
request is never refused for a limit the schema did not state.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from medgpt.settings import Limits

#: Properties that bound generated tokens, in every request model that has them (/ask, /summarize, /v1).
_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")


def _bound(prop: dict[str, Any], key: str, value: int) -> None:
    """Set ``key`` on the property's own schema, or on each typed branch of a nullable ``anyOf``."""
    branches = prop.get("anyOf", [prop])
    for branch in branches:
        if branch.get("type") in ("integer", "string", "object"):
            branch[key] = min(value, branch.get(key, value))


def apply_limits(schema: dict[str, Any], limits: Limits) -> dict[str, Any]:
    components = schema.get("components", {}).get("schemas", {})
    for model in components.values():
        props = model.get("properties", {})
        for name in _TOKEN_FIELDS:
            if name in props:
                _bound(props[name], "maximum", limits.max_tokens)
    lengths = {
        "AskRequest": {"question": limits.max_question_chars, "context": limits.max_text_chars},
        "SummarizeRequest": {"text": limits.max_text_chars},
    }
    for model, fields in lengths.items():
        props = components.get(model, {}).get("properties", {})
        for name, limit in fields.items():
            if name in props:
                _bound(props[name], "maxLength", limit)
    options = components.get("AskRequest", {}).get("properties", {}).get("options")
    if options:
        for branch in options.get("anyOf", [options]):
            if branch.get("type") == "object":
                branch.setdefault("additionalProperties", {"type": "string"})["maxLength"] = limits.max_option_chars
    for operation in schema.get("paths", {}).get("/ask", {}).values():
        for param in operation.get("parameters", []):
            if param.get("name") == "prompt":
                _bound(param["schema"], "maxLength", limits.max_question_chars)
    return schema


def install(app: FastAPI, limits: Limits) -> None:
    """Make ``app.openapi()`` return the generated schema with ``limits`` stated (computed once, cached)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = apply_limits(generate(), limits)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
