"""Bounds on a client's JSON schema (medgpt/schema_limits.py): the shapes that made one token take minutes under
llama.cpp's grammar are refused, in microseconds and without any network call; ordinary schemas compile to a
small grammar. No model is loaded (the converter is llama-cpp-python's pure-Python one)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from medgpt.schema_limits import LIMITS, SchemaRefused, check, to_grammar


def nested(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


def ambiguous(levels: int) -> dict:
    """Two alternatives matching the same text at every level: 2**levels parse paths open at once."""
    schema: dict = {"type": "string"}
    for i in range(levels):
        schema = {"anyOf": [{"type": "array", "items": schema}, {"type": "array", "items": schema, "minItems": 0}]}
    return schema


#: (schema, words the refusal must contain)
BAD = {
    "a 20,000-string enum": ({"enum": [f"value {i}" for i in range(20_000)]}, "bytes"),
    "a 100-string enum": ({"enum": [f"v{i}" for i in range(100)]}, "enum values"),
    "an anyOf of identical string types": ({"anyOf": [{"type": "string"}, {"type": "string"}]}, "twice"),
    "a type list naming a type twice": ({"type": ["string", "string"]}, "twice"),
    "an enum listing a value twice": ({"enum": ["a", "b", "a"]}, "twice"),
    "ambiguous alternatives nested": (ambiguous(7), "parse paths"),
    "too many alternatives": ({"anyOf": [{"const": i} for i in range(9)]}, "alternatives"),
    "deep nesting": (nested(30), "nests deeper"),
    "a remote $ref": ({"$ref": "https://json-schema.org/draft/2020-12/schema"}, "only local $ref"),
    "a remote $ref under an unknown keyword": ({"type": "object", "x-extra": {"$ref": "http://10.0.0.1/s"}},
                                               "only local $ref"),
    "a relative $ref": ({"$ref": "other.json#/a"}, "only local $ref"),
    "a $ref to nothing": ({"$ref": "#/$defs/missing"}, "points to nothing"),
    "a million-character maxLength": ({"type": "string", "maxLength": 1_000_000}, "maxLength"),
    "a huge minItems": ({"type": "array", "items": {"type": "string"}, "minItems": 100_000}, "minItems"),
    "a pattern repeated 100,000 times": ({"type": "string", "pattern": "^a{100000}$"}, "repetition"),
    "a long pattern": ({"type": "string", "pattern": "^" + "ab" * 200 + "$"}, "pattern characters"),
    "too many properties": ({"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(100)}},
                            "properties"),
    "a long enum value": ({"enum": ["x" * 1000]}, "characters"),
    "not an object": ([{"type": "string"}], "not a JSON object"),
    "a malformed properties": ({"type": "object", "properties": 3}, "not an object"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BAD))
def test_a_schema_over_a_bound_is_refused_at_once_naming_the_bound(name):
    schema, words = BAD[name]
    started = time.perf_counter()
    with pytest.raises(SchemaRefused) as refused:
        to_grammar(schema)
    assert time.perf_counter() - started < 0.5
    assert words in str(refused.value)
    assert "value 1" not in str(refused.value) and "10.0.0.1" not in str(refused.value)  # no client values


def test_a_remote_ref_is_refused_without_any_network_call(monkeypatch):
    calls = []

    def no_network(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a network call was made")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    for ref in ("https://example.org/schema.json", "http://169.254.169.254/latest/meta-data/", "file:///etc/passwd"):
        schema = {"type": "object", "properties": {"a": {"$ref": ref}}}
        with pytest.raises(SchemaRefused, match="only local"):
            to_grammar(schema)
    assert calls == []


GOOD = {
    "the diagnosis schema of the /v1 test": {"type": "object", "required": ["diagnosis"],
                                              "properties": {"diagnosis": {"type": "string", "maxLength": 24}}},
    "json_object": {"type": "object"},
    "an enum at the limit": {"enum": [f"option {i}" for i in range(LIMITS.max_enum)]},
    "local $defs and $ref": {"type": "object", "properties": {"dx": {"$ref": "#/$defs/code"}},
                             "$defs": {"code": {"type": "string", "pattern": "^[A-Z][0-9]{2}$"}}},
    "nullable fields": {"type": "object", "properties": {"a": {"type": ["string", "null"]},
                                                         "b": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}},
}  # fmt: skip


@pytest.mark.parametrize("name", list(GOOD))
def test_ordinary_schemas_compile_to_a_small_grammar(name):
    grammar = to_grammar(GOOD[name])
    assert "root ::=" in grammar
    assert len(grammar.encode()) <= LIMITS.max_grammar_bytes
    assert check(GOOD[name]) is GOOD[name]


def test_the_worst_schema_within_the_bounds_converts_quickly():
    """At every bound at once (the widest enum union, the longest strings and arrays, the most properties): what
    the gateway converts before the queue, and the engine then only parses."""
    worst = {"type": "object", "required": ["a"], "properties": {
        "a": {"type": "array", "maxItems": LIMITS.max_repeat,
              "items": {"anyOf": [{"enum": [f"a{i}" for i in range(32)]}, {"enum": [f"b{i}" for i in range(32)]}]}},
        "b": {"type": "string", "maxLength": LIMITS.max_repeat},
        **{f"p{i}": {"type": "integer"} for i in range(40)},
    }}  # fmt: skip
    started = time.perf_counter()
    try:
        grammar = to_grammar(worst)
    except SchemaRefused as exc:  # the grammar bound may be what stops it: refused, also in bounded time
        grammar = str(exc)
    assert time.perf_counter() - started < 1.0
    assert len(grammar.encode()) <= LIMITS.max_grammar_bytes


def test_a_schema_that_compiles_to_an_oversized_grammar_is_refused():
    # each bound respected, the grammar over its own: 60 properties with 60 strings of up to 256 characters
    wide = {"type": "object", "properties": {f"field_{i}": {"type": "string", "minLength": 1, "maxLength": 256}
                                             for i in range(60)}}  # fmt: skip
    check(wide)
    with pytest.raises(SchemaRefused, match="grammar"):
        to_grammar(wide)


def test_recursive_local_refs_are_allowed_and_bounded():
    tree = {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}}
    with pytest.raises(SchemaRefused, match="only local"):  # '#' alone: the converter takes '#/...' only
        check(tree)
    tree = {"type": "object", "properties": {"node": {"$ref": "#/$defs/node"}},
            "$defs": {"node": {"type": "object", "properties": {
                "children": {"type": "array", "maxItems": 4, "items": {"$ref": "#/$defs/node"}}}}}}  # fmt: skip
    before = json.dumps(tree)
    assert "root ::=" in to_grammar(tree)
    assert json.dumps(tree) == before  # the converter works on a copy: the request's schema is not rewritten
