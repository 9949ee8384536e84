"""OpenAI's attribute filters: comparison and compound, as vector store search takes them."""

from __future__ import annotations

import pytest

from middleware.rag.filters import compile_filter
from proxy.errors import InvalidRequest

DOC = {"team": "ops", "year": 2024, "public": True, "score": 0.5}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"type": "eq", "key": "team", "value": "ops"}, True),
        ({"type": "eq", "key": "team", "value": "food"}, False),
        ({"type": "ne", "key": "team", "value": "food"}, True),
        ({"type": "gt", "key": "year", "value": 2023}, True),
        ({"type": "gte", "key": "year", "value": 2024}, True),
        ({"type": "lt", "key": "year", "value": 2024}, False),
        ({"type": "lte", "key": "score", "value": 0.5}, True),
        ({"type": "eq", "key": "public", "value": True}, True),
        ({"type": "in", "key": "team", "value": ["ops", "dev"]}, True),
        ({"type": "nin", "key": "team", "value": ["ops", "dev"]}, False),
        # A missing attribute matches nothing but ne and nin, as a missing column would.
        ({"type": "eq", "key": "owner", "value": "x"}, False),
        ({"type": "ne", "key": "owner", "value": "x"}, True),
        # Across types: never equal, never ordered.
        ({"type": "eq", "key": "year", "value": "2024"}, False),
        ({"type": "gt", "key": "team", "value": 1}, False),
    ],
)
def test_comparisons(spec: dict[str, object], expected: bool) -> None:
    assert compile_filter(spec)(DOC) is expected


def test_compound_filters_nest() -> None:
    spec = {
        "type": "and",
        "filters": [
            {"type": "eq", "key": "team", "value": "ops"},
            {"type": "or", "filters": [{"type": "lt", "key": "year", "value": 2000},
                                       {"type": "eq", "key": "public", "value": True}]},
        ],
    }  # fmt: skip
    assert compile_filter(spec)(DOC) is True
    assert compile_filter(spec)({**DOC, "public": False}) is False


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "like", "key": "team", "value": "o"},
        {"type": "eq", "value": "ops"},
        {"type": "eq", "key": "team", "value": {"nested": 1}},
        {"type": "in", "key": "team", "value": "ops"},
        {"type": "and", "filters": []},
        "team = ops",
    ],
)
def test_a_malformed_filter_is_a_400_naming_the_parameter(spec: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        compile_filter(spec)
    assert caught.value.param is not None and caught.value.param.startswith("filters")
