"""results.json: the run's configuration and every request's timings, enough to redraw every figure."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from .runner import Cell
from .stats import Summary, summarize

FORMAT = "fluido-bench/1"
RESULTS = "results.json"


@dataclass(frozen=True, slots=True)
class Results:
    """A whole run: its configuration (as given), the endpoints in report order, and its cells."""

    config: dict[str, Any]
    endpoints: list[str]  # the first is the baseline of the ratios
    cells: list[Cell]

    def summaries(self) -> list[Summary]:
        return [summarize(c) for c in self.cells]


def write(results: Results, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": FORMAT,
        "config": results.config,
        "endpoints": results.endpoints,
        "summaries": [asdict(s) for s in results.summaries()],  # for readers; recomputed on load
        "cells": [c.to_json() for c in results.cells],
    }
    path = out / RESULTS
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return path


def read(path: Path) -> Results:
    """Read a results.json (or the directory holding one)."""
    if path.is_dir():
        path = path / RESULTS
    doc = orjson.loads(path.read_bytes())
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fluido bench results file")
    return Results(doc["config"], list(doc["endpoints"]), [Cell.from_json(c) for c in doc["cells"]])
