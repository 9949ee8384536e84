"""Hypothesis strategies from the OpenAI OpenAPI schema kept in tests/data (an OpenAPI 3.0 dialect).

hypothesis-jsonschema does not run with current Hypothesis, so this is a small generator over the keywords
that schema uses: $ref, nullable, enum, allOf / anyOf / oneOf, type, properties / required /
additionalProperties, items / minItems / maxItems, minimum / maximum, maxLength. Sizes are kept small:
the point is the variety of shapes, not their size (huge values are a mutation of their own).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import orjson
from hypothesis import strategies as st

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "data" / "openai_chat_request.schema.json"
JSONValue = Any

# Any small JSON value: leaves, then lists and objects of them, a few levels deep.
json_values: st.SearchStrategy[JSONValue] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


@functools.cache
def load_schema() -> dict[str, Any]:
    return dict(orjson.loads(SCHEMA_PATH.read_bytes()))


class SchemaStrategies:
    """Strategies for the schema's definitions, built lazily and shared (``$ref`` may recurse)."""

    def __init__(self, schema: dict[str, Any], overrides: dict[str, st.SearchStrategy[Any]] | None = None):
        self.definitions: dict[str, Any] = schema.get("definitions", {})
        self.root = {k: v for k, v in schema.items() if k not in ("definitions", "$comment")}
        self.overrides = overrides or {}  # property name -> strategy (e.g. "model": our aliases)
        self._refs: dict[str, st.SearchStrategy[Any]] = {}

    def request(self) -> st.SearchStrategy[dict[str, Any]]:
        return self.of(self.root)

    def of(self, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name not in self._refs:
                self._refs[name] = st.deferred(lambda: self.of(self.definitions[name]))
            return self._refs[name]
        if schema.get("nullable"):
            rest = {k: v for k, v in schema.items() if k != "nullable"}
            return st.none() | self.of(rest)
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        if "allOf" in schema:
            return self.of(self._merge(schema["allOf"]))
        for key in ("oneOf", "anyOf"):
            if key in schema:
                siblings = {k: v for k, v in schema.items() if k not in (key, "default")}
                return st.one_of([self.of({**siblings, **option}) for option in schema[key]])
        kind = schema.get("type")
        if kind is None and "properties" in schema:
            kind = "object"
        if kind == "string":
            return st.text(max_size=min(schema.get("maxLength", 24), 24))
        if kind == "integer":
            return st.integers(schema.get("minimum", -5), schema.get("maximum", 4096))
        if kind == "number":
            lo, hi = schema.get("minimum", -1e6), schema.get("maximum", 1e6)
            return st.floats(lo, hi, allow_nan=False, allow_infinity=False)
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        if kind == "array":
            lo = schema.get("minItems", 0)
            hi = min(schema.get("maxItems", lo + 3), lo + 3)
            return st.lists(self.of(schema.get("items", {})), min_size=lo, max_size=hi)
        if kind == "object":
            return self._object(schema)
        return json_values

    def _merge(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
        for part in parts:
            while "$ref" in part:
                part = self.definitions[part["$ref"].rsplit("/", 1)[-1]]
            if "allOf" in part:
                part = self._merge(part["allOf"])
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += part.get("required", [])
        return merged

    def _object(self, schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        props: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))

        def field(name: str) -> st.SearchStrategy[Any]:
            return self.overrides[name] if name in self.overrides else self.of(props[name])

        fixed = st.fixed_dictionaries(
            {n: field(n) for n in props if n in required},
            optional={n: field(n) for n in props if n not in required},
        )
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            more = st.dictionaries(st.text(max_size=8), self.of(extra), max_size=2)
        elif extra is True or not props:
            more = st.dictionaries(st.text(max_size=8), json_values, max_size=2)
        else:
            return fixed
        return st.builds(lambda a, b: {**b, **a}, fixed, more)
