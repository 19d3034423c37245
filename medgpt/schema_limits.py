"""Bounds on a client's JSON schema (``response_format``), checked before the schema reaches any engine or queue.

A schema is compiled into a grammar that llama.cpp applies to every token of the vocabulary at every step, for as
many parse paths as the grammar keeps open at once; cancellation is only checked between tokens. So one schema of
the wrong shape (a 20,000-string ``enum``, a ``maxLength`` of a million, ``anyOf`` alternatives that match the same
text, nested a few levels) makes a single token take minutes while the engine's lock and the request's admission
slot are held, and a timeout cannot stop it. The bounds here keep the work per token small:

- :func:`check` (pure Python, no engine): the schema's size in bytes and nesting depth; enum sizes; the number of
  properties and of alternatives (``anyOf``/``oneOf``/a type list), with duplicate alternatives refused as
  ambiguous; an estimate of the parse paths open at once (:data:`SchemaLimits.max_width`); repetition counts
  (``maxLength``, ``maxItems``, a pattern's ``{n,m}``); and ``$ref``: only local ``#/...`` pointers into the schema
  itself, so nothing is ever fetched.
- :func:`to_grammar`: the checked schema converted to GBNF (llama-cpp-python's converter, which the engines that
  decode under grammars use), refused when the grammar is over :data:`SchemaLimits.max_grammar_bytes` or rules.
  The gateway does this before the request takes its turn in the queue and hands the engine the GBNF text, so the
  engine only parses a grammar of bounded size under its lock.

Every refusal is a :class:`SchemaRefused` (a ``ValueError``) whose message names the rule and where in the schema
(a JSON pointer), never the client's values. No HTTP here: which status a refusal becomes is the gateway's business.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


class SchemaRefused(ValueError):
    """The schema is over a bound, ambiguous, or cannot be converted; the message says which and where."""


@dataclass(frozen=True)
class SchemaLimits:
    #: The schema as compact JSON.
    max_bytes: int = 16_384
    #: Nesting of JSON objects and arrays in the schema document (a property's schema is two levels below its object).
    max_depth: int = 24
    #: Values of one ``enum``, and ``enum`` values plus ``const`` in the whole schema.
    max_enum: int = 64
    max_enum_total: int = 256
    #: Characters of one ``enum``/``const`` value as JSON.
    max_enum_value_chars: int = 256
    #: Properties of one object, and in the whole schema.
    max_properties: int = 64
    max_properties_total: int = 256
    #: Alternatives of one ``anyOf``/``oneOf``/``type`` list.
    max_alternatives: int = 8
    #: Parse paths the grammar may keep open at once (alternatives of nested unions multiply; enum values count
    #: one each): what each token's check over the vocabulary is multiplied by.
    max_width: int = 64
    #: ``minLength``/``maxLength``/``minItems``/``maxItems``/``minProperties``/``maxProperties`` and a pattern's
    #: ``{n,m}``: the converter writes each repetition out.
    max_repeat: int = 256
    #: Characters of one ``pattern``.
    max_pattern_chars: int = 256
    #: The GBNF it compiles to.
    max_grammar_bytes: int = 32_768
    max_grammar_rules: int = 256


LIMITS = SchemaLimits()

_UNIONS = ("anyOf", "oneOf")
_REPEATS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties", "minContains",
            "maxContains")  # fmt: skip
#: Keys whose value is a map of names to schemas.
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
#: Keys whose value is one schema.
_SCHEMA_ONE = ("items", "additionalProperties", "additionalItems", "contains", "not", "if", "then", "else",
               "propertyNames", "unevaluatedItems", "unevaluatedProperties")  # fmt: skip
#: Keys whose value is a list of schemas.
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_QUANTIFIER = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")


def _pointer(path: tuple) -> str:
    """A JSON pointer to ``path`` (``#/properties/a/enum``), for messages: the schema's own keys, no values."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    text = "#/" + "/".join(parts) if parts else "#"
    return text if len(text) <= 120 else text[:117] + "..."


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _scan(schema: Any, limit: int) -> list[tuple[Any, tuple]]:
    """Refuse nesting deeper than ``limit`` (iteratively: a deep document must not exhaust the Python stack) and
    return every ``$ref`` in the document with its path, wherever it is (converters resolve them all)."""
    refs = []
    stack = [(schema, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                raise SchemaRefused(f"the schema nests deeper than {limit} levels (at {_pointer(path)})")
            if isinstance(node, dict) and "$ref" in node:
                refs.append((node["$ref"], (*path, "$ref")))
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((v, depth + 1, (*path, k)) for k, v in items)
    return refs


def _resolve(root: dict, ref: Any, path: tuple) -> Any:
    """The target of a local ``$ref`` (``#/...``); any other reference is refused without being fetched."""
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise SchemaRefused(f"only local $ref pointers ('#/...') are supported; refused at {_pointer(path)} "
                            "(nothing is fetched)")  # fmt: skip
    node: Any = root
    for raw in ref[2:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise SchemaRefused(f"the $ref at {_pointer(path)} points to nothing in the schema")
    if not isinstance(node, dict):
        raise SchemaRefused(f"the $ref at {_pointer(path)} does not point to a schema object")
    return node


class _Checker:
    def __init__(self, root: dict, limits: SchemaLimits) -> None:
        self.root = root
        self.limits = limits
        self.enum_total = 0
        self.properties_total = 0
        self.widths: dict[int, int] = {}  # id(schema) -> parse paths, for $ref targets met more than once
        self.resolving: set[int] = set()

    def count(self, what: str, n: int, limit: int, path: tuple) -> None:
        if n > limit:
            raise SchemaRefused(f"{what} at {_pointer(path)}: {n}, over the limit of {limit}")

    def values(self, values: list, path: tuple) -> None:
        lim = self.limits
        self.enum_total += len(values)
        self.count("enum values in the schema", self.enum_total, lim.max_enum_total, path)
        seen = set()
        for i, value in enumerate(values):
            text = _canonical(value)
            if len(text) > lim.max_enum_value_chars:
                raise SchemaRefused(f"an enum/const value at {_pointer((*path, i))} is over "
                                    f"{lim.max_enum_value_chars} characters")  # fmt: skip
            if text in seen:
                raise SchemaRefused(f"the enum at {_pointer(path)} lists a value twice")
            seen.add(text)

    def width(self, schema: Any, path: tuple) -> int:
        """Check ``schema`` and return the parse paths its grammar keeps open at once (an upper estimate)."""
        lim = self.limits
        if not isinstance(schema, dict):
            raise SchemaRefused(f"the schema at {_pointer(path)} is not an object")
        if "$ref" in schema:
            target = _resolve(self.root, schema["$ref"], (*path, "$ref"))
            key = id(target)
            if key in self.resolving:  # a recursive reference: its paths are counted where it started
                return 1
            if key not in self.widths:
                self.resolving.add(key)
                try:
                    self.widths[key] = self.width(target, (*path, "$ref"))
                finally:
                    self.resolving.discard(key)
            return self.widths[key]
        for key in _REPEATS:
            value = schema.get(key)
            if value is not None:
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise SchemaRefused(f"{key} at {_pointer(path)} is not a non-negative integer")
                self.count(key, value, lim.max_repeat, path)
        if "pattern" in schema:
            self.pattern(schema["pattern"], (*path, "pattern"))
        if "const" in schema:
            self.values([schema["const"]], (*path, "const"))
        widths = [1]
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise SchemaRefused(f"the enum at {_pointer(path)} is not a non-empty list")
            self.count("enum values", len(values), lim.max_enum, (*path, "enum"))
            self.values(values, (*path, "enum"))
            widths.append(len(values))
        kinds = schema.get("type")
        if isinstance(kinds, list):
            self.count("types in the type list", len(kinds), lim.max_alternatives, (*path, "type"))
            if len({_canonical(k) for k in kinds}) < len(kinds):
                raise SchemaRefused(f"the type list at {_pointer(path)} names a type twice (ambiguous)")
            widths.append(len(kinds))
        for key in _UNIONS:
            if key in schema:
                widths.append(self.union(schema[key], (*path, key)))
        properties = schema.get("properties")
        if properties is not None:
            if not isinstance(properties, dict):
                raise SchemaRefused(f"properties at {_pointer(path)} is not an object")
            self.count("properties", len(properties), lim.max_properties, (*path, "properties"))
            self.properties_total += len(properties)
            self.count("properties in the schema", self.properties_total, lim.max_properties_total, path)
            required = schema.get("required", [])
            if not isinstance(required, list):
                raise SchemaRefused(f"required at {_pointer(path)} is not a list")
            # Each optional property is an alternative at the point where the next one may start.
            widths.append(sum(1 for name in properties if name not in required) + 1)
            widths.extend(self.width(s, (*path, "properties", n)) for n, s in properties.items())
        for key in _SCHEMA_ONE:
            sub = schema.get(key)
            if isinstance(sub, dict):
                widths.append(self.width(sub, (*path, key)))
            elif key == "items" and isinstance(sub, list):  # draft-04 tuples
                widths.extend(self.width(s, (*path, key, i)) for i, s in enumerate(sub))
            elif sub is not None and not isinstance(sub, bool):
                raise SchemaRefused(f"{key} at {_pointer(path)} is not a schema")
        for key in ("allOf", "prefixItems"):
            subs = schema.get(key)
            if subs is not None:
                if not isinstance(subs, list):
                    raise SchemaRefused(f"{key} at {_pointer(path)} is not a list")
                self.count(f"{key} entries", len(subs), lim.max_alternatives, (*path, key))
                widths.extend(self.width(s, (*path, key, i)) for i, s in enumerate(subs))
        for key in ("$defs", "definitions"):  # checked where they are used, through $ref; here only their size
            defs = schema.get(key)
            if defs is not None and not isinstance(defs, dict):
                raise SchemaRefused(f"{key} at {_pointer(path)} is not an object")
        width = max(widths)
        self.count("parse paths open at once (alternatives multiply when nested)", width, lim.max_width, path)
        return width

    def union(self, alternatives: Any, path: tuple) -> int:
        if not isinstance(alternatives, list) or not alternatives:
            raise SchemaRefused(f"{path[-1]} at {_pointer(path[:-1])} is not a non-empty list")
        self.count("alternatives", len(alternatives), self.limits.max_alternatives, path)
        if len({_canonical(a) for a in alternatives}) < len(alternatives):
            raise SchemaRefused(f"{path[-1]} at {_pointer(path[:-1])} lists the same alternative twice (ambiguous)")
        total = sum(self.width(a, (*path, i)) for i, a in enumerate(alternatives))
        self.count("parse paths open at once (alternatives multiply when nested)", total, self.limits.max_width,
                   path)  # fmt: skip
        return total

    def pattern(self, pattern: Any, path: tuple) -> None:
        lim = self.limits
        if not isinstance(pattern, str):
            raise SchemaRefused(f"the pattern at {_pointer(path)} is not a string")
        self.count("pattern characters", len(pattern), lim.max_pattern_chars, path)
        for low, high in _QUANTIFIER.findall(pattern):
            for n in (low, high):
                if n and int(n) > lim.max_repeat:
                    raise SchemaRefused(f"a repetition in the pattern at {_pointer(path)} is over {lim.max_repeat}")


def check(schema: Any, limits: SchemaLimits = LIMITS) -> dict:
    """``schema`` itself once it is within every bound (see the module's doc); else :class:`SchemaRefused`."""
    if not isinstance(schema, dict):
        raise SchemaRefused("the schema is not a JSON object")
    refs = _scan(schema, limits.max_depth)  # first: the checks below recurse
    size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > limits.max_bytes:
        raise SchemaRefused(f"the schema is {size} bytes, over the limit of {limits.max_bytes}")
    for ref, path in refs:  # every one local and resolvable, before anything reads the schema
        _resolve(schema, ref, path)
    checker = _Checker(schema, limits)
    try:
        checker.width(schema, ())
        # $defs that nothing references are converted too: check them as well (those met through $ref already
        # were, and are not counted twice).
        for key in ("$defs", "definitions"):
            for name, sub in (schema.get(key) or {}).items():
                if id(sub) not in checker.widths:
                    checker.width(sub, (key, name))
    except RecursionError:
        raise SchemaRefused("the schema's references nest too deeply") from None
    return schema


def to_grammar(schema: dict, limits: SchemaLimits = LIMITS) -> str:
    """The GBNF grammar of ``schema`` (checked first), as llama-cpp-python converts it; :class:`SchemaRefused`
    when it cannot be converted or the grammar is over :data:`SchemaLimits.max_grammar_bytes` or rules. Needs
    llama-cpp-python (the engines that decode under grammars have it)."""
    check(schema, limits)
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        grammar = json_schema_to_gbnf(json.dumps(schema))
    # The converter answers schemas it cannot handle with AssertionError, TypeError, KeyError...: each is the
    # schema's fault here, and its text may quote the schema, so it is not passed on.
    except RecursionError:
        raise SchemaRefused("the schema's references nest too deeply to convert") from None
    except Exception as exc:  # noqa: BLE001
        raise SchemaRefused(f"the schema uses something the JSON-schema converter does not support "
                            f"({type(exc).__name__})") from None  # fmt: skip
    size = len(grammar.encode("utf-8"))
    if size > limits.max_grammar_bytes:
        raise SchemaRefused(f"the schema compiles to a grammar of {size} bytes, over the limit of "
                            f"{limits.max_grammar_bytes}")  # fmt: skip
    rules = grammar.count("\n") + 1
    if rules > limits.max_grammar_rules:
        raise SchemaRefused(f"the schema compiles to {rules} grammar rules, over the limit of "
                            f"{limits.max_grammar_rules}")  # fmt: skip
    return grammar
