"""Fuzz cases: valid requests from the OpenAI schema, and every way to spoil one.

A ``Case`` is what goes on the wire: method, path, headers, body bytes and how they are sent (all at once,
trickled, cut short, or abandoned). ``cases(route)`` mixes, for one route: valid bodies; one field made
the wrong type, null, or joined by unknown fields; huge and deeply nested values; non-finite and
out-of-range numbers; duplicate keys; invalid UTF-8 and BOMs; other content types and encodings; bodies
that are not JSON objects; transport faults; other methods; and hand cases for the union-typed fields.
"""

from __future__ import annotations

import copy
import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import strategies as st

from tests.fuzz.schema import json_values

JSON_HEADERS = (("content-type", "application/json"),)


@dataclass(frozen=True, slots=True)
class Case:
    kind: str  # which generator made it: the figures are counted per kind
    path: str
    body: bytes
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = JSON_HEADERS
    transport: str = "normal"  # "normal", "slow" (trickled), "truncated" (short of its length), "leave"

    def __repr__(self) -> str:  # hypothesis prints failing cases: keep them readable
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"..."
        return f"Case({self.kind}, {self.method} {self.path}, {self.transport}, {self.headers}, {body!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # what hypothesis's printer calls
        printer.text(repr(self))


def _case(kind: str, path: str, body: dict[str, Any] | bytes, **options: Any) -> Case:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Case(kind, path, raw, **options)


# -- walking a body ----------------------------------------------------------------------------------
Path = tuple[str | int, ...]


def node_paths(value: Any, path: Path = ()) -> Iterator[Path]:
    """Every position in a decoded body, the root excepted."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, child in items:
        yield (*path, key)
        yield from node_paths(child, (*path, key))


def container_paths(value: Any) -> list[Path]:
    return [()] + [p for p in node_paths(value) if isinstance(_get(value, p), dict)]


def _get(value: Any, path: Path) -> Any:
    for key in path:
        value = value[key]
    return value


def _set(body: Any, path: Path, new: Any) -> Any:
    body = copy.deepcopy(body)
    _get(body, path[:-1])[path[-1]] = new
    return body


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


# -- mutations of a valid body -------------------------------------------------------------------------
@st.composite
def wrong_type(draw: st.DrawFn, bodies: st.SearchStrategy[dict[str, Any]], path: str) -> Case:
    body = draw(bodies)
    where = draw(st.sampled_from(list(node_paths(body))))
    old = _get(body, where)
    new = draw(json_values.filter(lambda v: _json_type(v) != _json_type(old)))
    return _case("wrong_type", path, _set(body, where, new))


@st.composite
def nulled(draw: st.DrawFn, bodies: st.SearchStrategy[dict[str, Any]], path: str) -> Case:
    body = draw(bodies)
    where = draw(st.sampled_from(list(node_paths(body))))
    return _case("null", path, _set(body, where, None))


@st.composite
def unknown_fields(draw: st.DrawFn, bodies: st.SearchStrategy[dict[str, Any]], path: str) -> Case:
    body = draw(bodies)
    where = draw(st.sampled_from(container_paths(body)))
    extra = draw(st.dictionaries(st.text(min_size=1, max_size=12), json_values, min_size=1, max_size=3))
    target = copy.deepcopy(body)
    _get(target, where).update({k: v for k, v in extra.items() if k not in _get(target, where)})
    return _case("unknown_field", path, target)


SENTINEL = "@@FUZZ@@"
_QUOTED = orjson.dumps(SENTINEL)


@st.composite
def raw_value(draw: st.DrawFn, bodies: st.SearchStrategy[dict[str, Any]], path: str) -> Case:
    """A value no JSON encoder would write, spliced into a body as text: non-finite or out-of-range
    numbers, deep nesting, invalid UTF-8, lone surrogates, control characters."""
    body = draw(bodies)
    where = draw(st.sampled_from(list(node_paths(body)) or [("x-fuzz",)]))
    depth = draw(st.sampled_from([63, 64, 65, 200, 254, 255, 256, 1023, 1024, 1025, 5000, 100_000]))
    token = draw(
        st.sampled_from(
            [
                b"NaN", b"Infinity", b"-Infinity", b"1e309", b"-1e309", b"1e-400", b"-0",
                b"18446744073709551615", b"18446744073709551616", b"-9223372036854775809",
                b"123456789012345678901234567890", b"2.0000000000000001", b"1E400", b"0x10", b"01",
                b'"\xff\xfe"', b'"\xc3\x28"', b'"\xc0\xaf"', b'"\xed\xa0\x80"', b'"\\ud800"', b'"\\udc00x"',
                b'"\\u0000"', b'"a\x00b"', b'"\x1f"', b'"\\uD83D\\uDE00"',
                b"[" * depth + b"]" * depth,
                b'{"a":' * depth + b"1" + b"}" * depth,
            ]
        )
    )  # fmt: skip
    if len(where) == 1 and where[0] not in body:
        body = {**body, where[0]: SENTINEL}
    else:
        body = _set(body, where, SENTINEL)
    return _case("raw_value", path, orjson.dumps(body).replace(_QUOTED, token, 1))


@st.composite
def huge(draw: st.DrawFn, bodies: st.SearchStrategy[dict[str, Any]], path: str) -> Case:
    body = copy.deepcopy(draw(bodies))
    size = draw(st.sampled_from([10_000, 1_000_000, 9_000_000, 11_000_000]))
    where = draw(st.sampled_from(list(node_paths(body))))
    shape = draw(st.sampled_from(["string", "list", "object", "key"]))
    if shape == "string":
        new: Any = "x" * size
    elif shape == "list":
        new = [1] * (size // 2)
    elif shape == "object":
        new = {f"k{i}": i for i in range(size // 12)}
    else:
        body[("k" * size)[: size // 2]] = 1
        return _case("huge", path, body)
    return _case("huge", path, _set(body, where, new))


@st.composite
def duplicate_keys(draw: st.DrawFn, bodies: st.SearchStrategy[dict[str, Any]], path: str) -> Case:
    body = draw(bodies)
    key = draw(st.sampled_from(list(body)))
    other = orjson.dumps(draw(json_values))
    raw = orjson.dumps(body)
    pair = orjson.dumps(key) + b":" + other
    # Before the real key (the real value wins, as in orjson) or after it (the odd one wins).
    spliced = b"{" + pair + b"," + raw[1:] if draw(st.booleans()) else raw[:-1] + b"," + pair + b"}"
    return _case("duplicate_key", path, spliced)


@st.composite
def encodings(draw: st.DrawFn, bodies: st.SearchStrategy[dict[str, Any]], path: str) -> Case:
    raw = orjson.dumps(draw(bodies))
    how = draw(st.sampled_from(["gzip", "deflate", "br", "gzip-lie", "bom", "utf-16", "utf-32", "nul"]))
    if how == "gzip":
        return _case(
            "encoding", path, gzip.compress(raw), headers=(*JSON_HEADERS, ("content-encoding", "gzip"))
        )
    if how == "deflate":
        return _case(
            "encoding", path, zlib.compress(raw), headers=(*JSON_HEADERS, ("content-encoding", "deflate"))
        )
    if how == "br":
        return _case("encoding", path, raw, headers=(*JSON_HEADERS, ("content-encoding", "br")))
    if how == "gzip-lie":  # says gzip, is not
        return _case("encoding", path, raw, headers=(*JSON_HEADERS, ("content-encoding", "gzip")))
    if how == "bom":
        return _case("encoding", path, b"\xef\xbb\xbf" + raw)
    if how == "nul":
        return _case("encoding", path, raw + b"\x00")
    codec = "utf-16" if how == "utf-16" else "utf-32"
    return _case("encoding", path, raw.decode().encode(codec))


CONTENT_TYPES = [
    (), (("content-type", "text/plain"),), (("content-type", "application/x-www-form-urlencoded"),),
    (("content-type", "multipart/form-data; boundary=x"),), (("content-type", "application/json; charset=utf-16"),),
    (("content-type", "application/xml"),), (("content-type", "*/*"),), (("content-type", "application/json"),) * 2,
]  # fmt: skip


@st.composite
def content_types(draw: st.DrawFn, bodies: st.SearchStrategy[dict[str, Any]], path: str) -> Case:
    return _case("content_type", path, draw(bodies), headers=draw(st.sampled_from(CONTENT_TYPES)))


def not_objects(path: str) -> st.SearchStrategy[Case]:
    literal = st.sampled_from(
        [b"", b" ", b"[]", b"null", b"1", b'"x"', b"{", b"}", b"{}", b'{"model":', b"true", b"[{}]"]
    )
    return (literal | st.binary(max_size=64)).map(lambda raw: _case("not_object", path, raw))


@st.composite
def transport(draw: st.DrawFn, bodies: st.SearchStrategy[dict[str, Any]], path: str) -> Case:
    how = draw(st.sampled_from(["slow", "truncated", "leave"]))
    return _case("transport", path, draw(bodies), transport=how)


def other_methods(path: str) -> st.SearchStrategy[Case]:
    return st.sampled_from(["GET", "PUT", "DELETE", "PATCH"]).map(
        lambda method: Case("method", path, b"", method=method, headers=())
    )


def spoiled(bodies: st.SearchStrategy[dict[str, Any]], path: str) -> st.SearchStrategy[Case]:
    return st.one_of(
        wrong_type(bodies, path), nulled(bodies, path), unknown_fields(bodies, path), raw_value(bodies, path),
        huge(bodies, path), duplicate_keys(bodies, path), encodings(bodies, path), content_types(bodies, path),
        not_objects(path), transport(bodies, path), other_methods(path),
    )  # fmt: skip
