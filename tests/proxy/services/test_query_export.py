"""Exporting the query graph in a child process: written once, whole, then loaded from the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from proxy.services import query_export
from proxy.services.embedder import bundled_minilm_path
from proxy.services.query_model import SAMPLES, graph_name, load_query_model


class Recorded:
    """The real exporter (a child process), with its calls counted."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def __call__(self, model_dir: Path, path: Path) -> None:
        self.paths.append(path)
        query_export.export_in_child(model_dir, path)


def test_the_graph_is_exported_in_a_child_once_then_loaded_from_the_cache(tmp_path: Path) -> None:
    model_dir, exports = bundled_minilm_path(), Recorded()
    first = load_query_model(model_dir, tmp_path, exports)
    assert first is not None
    assert exports.paths == [tmp_path / graph_name(model_dir)]
    # The graph, whole (no temporary file left), and the lock that replicas starting together take.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".export.lock", graph_name(model_dir)]
    again = load_query_model(model_dir, tmp_path, exports)
    assert again is not None and len(exports.paths) == 1
    assert np.array_equal(again.encode(SAMPLES[0]), first.encode(SAMPLES[0]))


def test_a_failed_export_says_why(tmp_path: Path) -> None:
    with pytest.raises(query_export.ExportFailed, match="no model in"):
        query_export.export_in_child(tmp_path / "no-model", tmp_path / "graph.onnx")
    assert not list(tmp_path.iterdir())


def test_a_write_is_whole_or_absent(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "graph.onnx"
    query_export.write_atomically(path, b"one")
    query_export.write_atomically(path, b"two")  # a second replica's export replaces the first
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["graph.onnx"]
