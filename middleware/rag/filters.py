"""OpenAI's attribute filters for vector store search: validated once, then evaluated on chunk attributes.

A comparison is ``{"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|"in"|"nin", "key", "value"}``; a compound is
``{"type": "and"|"or", "filters": [...]}``, nested freely. A missing attribute fails every comparison but
``ne`` and ``nin``, as a missing column would. Numbers compare with numbers, strings with strings; a
comparison across types is false (eq) or true (ne), never an error.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from proxy.errors import InvalidRequest

Attributes = Mapping[str, Any]
Predicate = Callable[[Attributes], bool]
ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le,
}  # fmt: skip
SCALAR = (str, int, float, bool)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, int | float) else "str"


def _comparison(kind: str, key: str, value: Any) -> Predicate:
    if kind in ("in", "nin"):
        members = list(value)

        def member(a: Attributes) -> bool:
            return key in a and any(_kind(a[key]) == _kind(m) and a[key] == m for m in members)

        return member if kind == "in" else (lambda a: not member(a))
    if kind in ("eq", "ne"):
        equal = kind == "eq"
        return lambda a: (key in a and _kind(a[key]) == _kind(value) and a[key] == value) == equal
    order = ORDER[kind]
    return lambda a: key in a and _kind(a[key]) == _kind(value) != "bool" and order(a[key], value)


def compile_filter(spec: Any, param: str = "filters") -> Predicate:
    """The predicate of one filter object; a malformed one is a 400 naming where it is wrong."""
    if not isinstance(spec, dict):
        raise InvalidRequest(f"'{param}' must be an object.", param=param)
    kind = spec.get("type")
    if kind in ("and", "or"):
        parts = spec.get("filters")
        if not isinstance(parts, list) or not parts:
            raise InvalidRequest(f"'{param}.filters' must be a non-empty list.", param=param)
        preds = [compile_filter(p, f"{param}.filters[{i}]") for i, p in enumerate(parts)]
        if kind == "and":
            return lambda a: all(p(a) for p in preds)
        return lambda a: any(p(a) for p in preds)
    if kind not in ("eq", "ne", "in", "nin", *ORDER):
        raise InvalidRequest(
            f"'{param}.type' must be one of eq, ne, gt, gte, lt, lte, in, nin, and, or.", param=param
        )
    key, value = spec.get("key"), spec.get("value")
    if not isinstance(key, str) or not key:
        raise InvalidRequest(f"'{param}.key' must be a non-empty string.", param=param)
    if kind in ("in", "nin"):
        if not isinstance(value, list) or not all(isinstance(v, SCALAR) for v in value):
            raise InvalidRequest(f"'{param}.value' must be a list of strings or numbers.", param=param)
    elif not isinstance(value, SCALAR):
        raise InvalidRequest(f"'{param}.value' must be a string, number or boolean.", param=param)
    return _comparison(kind, key, value)
