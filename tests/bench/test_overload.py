"""bench.overload: the fake and Fluido as child processes, compared at multiples of the fake's capacity."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench.overload import capacity, main


def test_capacity_grows_with_slots_and_shrinks_with_slower_tokens() -> None:
    four = capacity(4, 20, 0.2, 10, "short=70,long=30", 0)
    assert capacity(8, 20, 0.2, 10, "short=70,long=30", 0) == pytest.approx(2 * four)
    assert capacity(4, 20, 0.2, 20, "short=70,long=30", 0) < four
    assert 4.0 < four < 5.0  # the README's run: about 4.5 req/s


def test_a_short_run_compares_direct_and_fluido(tmp_path: Path) -> None:
    code = main(
        ["--loads", "1", "--duration", "0.5", "--drain", "3", "--itl-ms", "2", "--out", str(tmp_path)]
    )
    assert code == 0
    doc = orjson.loads((tmp_path / "results.json").read_bytes())
    assert doc["endpoints"] == ["direct", "fluido"]
    assert doc["config"]["command"].startswith("fluido bench --url http://127.0.0.1:")
    assert all(r["outcome"] == "ok" for c in doc["cells"] for r in c["records"])
    assert {c["endpoint"] for c in doc["cells"]} == {"direct", "fluido"}
