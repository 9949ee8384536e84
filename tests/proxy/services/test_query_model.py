"""The ONNX twin of MiniLM for single texts: the torch model's vectors, checked before it is used, from a
cached graph that is exported again when it is unusable."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from bench.rag import DATA
from proxy.services import query_export, query_model
from proxy.services.embedder import Embedder, bundled_minilm_path, load_minilm
from proxy.services.query_model import (
    OnnxQueryModel,
    cache_dir,
    graph_name,
    load_query_model,
    shared_query_model,
)
from tests.support.counting_model import CountingModel

TEXTS = [
    "What cools the Zorblax reactor?",
    "ok",
    "Vitamin D supplementation reduces the risk of respiratory infections in children.",
    "BRCA1 mutations increase the lifetime risk of breast and ovarian cancer. " * 40,  # cut at 256 pieces
]


def scifact(name: str, n: int) -> list[str]:
    """A few real texts (claims or abstracts), when SciFact is next to the repo."""
    path = DATA / name
    if not path.exists():
        return []
    lines = [line for line in path.read_bytes().splitlines() if line.strip()][:n]
    return [str(orjson.loads(line)["text"]) for line in lines]


@pytest.fixture(scope="module")
def minilm() -> Any:
    return load_minilm()


@pytest.fixture(scope="module")
def onnx() -> OnnxQueryModel:
    made = shared_query_model()  # the test session's cached graph (exported in a child the first time)
    assert made is not None
    return made


@pytest.fixture(scope="module")
def good_graph(onnx: OnnxQueryModel) -> Path:
    path = cache_dir() / graph_name(bundled_minilm_path())
    assert path.is_file()
    return path


class Exports:
    """An exporter that counts its calls and writes a copy of a good graph (not a real export)."""

    def __init__(self, good: Path | None) -> None:
        self.good, self.calls = good, 0

    def __call__(self, model_dir: Path, path: Path) -> None:
        self.calls += 1
        if self.good is not None:
            query_export.write_atomically(path, self.good.read_bytes())


def test_the_onnx_model_gives_the_torch_models_vectors(minilm: Any, onnx: OnnxQueryModel) -> None:
    texts = TEXTS + scifact("queries_train.jsonl", 20) + scifact("corpus.jsonl", 10)
    want = np.asarray(minilm.encode(texts, normalize_embeddings=True), dtype=np.float32)
    got = np.stack([onnx.encode(t) for t in texts])
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosines = (got * want).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines
    batched = onnx.encode_batch(texts, batch_size=3)  # padded batches: the same vectors
    assert ((batched * got).sum(axis=1)).min() >= 0.99999


def test_the_tokenizer_neither_pads_nor_cuts_short(onnx: OnnxQueryModel) -> None:
    """The bundled tokenizer.json pads and truncates to 128 word pieces; a query must be read as it is,
    up to the model's 256."""
    assert len(onnx.tokenizer.encode("ok").ids) == 3  # [CLS] ok [SEP]
    assert len(onnx.tokenizer.encode(TEXTS[-1]).ids) == 256


def test_a_good_cached_graph_is_used_without_exporting(good_graph: Path, tmp_path: Path) -> None:
    shutil.copy(good_graph, tmp_path / good_graph.name)
    exports = Exports(None)
    assert load_query_model(bundled_minilm_path(), tmp_path, exports) is not None
    assert exports.calls == 0


@pytest.mark.parametrize("damage", ["truncated", "other vectors"])
def test_a_damaged_cached_graph_is_detected_and_replaced(
    good_graph: Path, tmp_path: Path, damage: str
) -> None:
    import onnx

    path = tmp_path / good_graph.name
    if damage == "truncated":
        path.write_bytes(good_graph.read_bytes()[: good_graph.stat().st_size // 2])
    else:  # loads, but its vectors are not the ones it carries (as if its weights were changed)
        proto = onnx.load(str(good_graph))
        props = {p.key: p.value for p in proto.metadata_props}
        reference = query_model.decode_reference(props[query_model.REFERENCE])
        props[query_model.REFERENCE] = query_model.encode_reference(np.roll(reference, 1, axis=1))
        del proto.metadata_props[:]
        onnx.helper.set_model_props(proto, props)
        path.write_bytes(proto.SerializeToString())
    exports = Exports(good_graph)
    made = load_query_model(bundled_minilm_path(), tmp_path, exports)
    assert made is not None and exports.calls == 1
    assert path.read_bytes() == good_graph.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".export.lock", path.name]  # no temporary file


def test_a_graph_that_gives_other_vectors_is_not_used(
    good_graph: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tokenizer file as shipped (every text padded to 128 pieces, the padding then counted in the
    mean): vectors off the model's, refused, even after exporting again."""
    from tokenizers import Tokenizer

    def as_shipped(model_dir: Path, max_pieces: int) -> Any:
        return Tokenizer.from_file(str(model_dir / "tokenizer.json"))

    shutil.copy(good_graph, tmp_path / good_graph.name)
    monkeypatch.setattr(query_model, "tokenizer_of", as_shipped)
    exports = Exports(good_graph)
    assert load_query_model(bundled_minilm_path(), tmp_path, exports) is None
    assert exports.calls == 1  # once, then torch


def test_without_a_graph_single_texts_go_through_the_torch_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(model_dir: Path, path: Path) -> None:
        raise query_export.ExportFailed("no exporter here")

    monkeypatch.setenv(query_model.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(query_export, "export_in_child", fails)
    model = CountingModel()
    embedder = Embedder(model, fast_queries=True)
    try:
        assert embedder.query_model is None
        assert np.isclose(np.linalg.norm(embedder.encode_one("a query")), 1.0)
    finally:
        embedder.close()
    assert model.calls == 1
    assert shared_query_model() is None  # tried once per process and directory, not per embedder


async def test_queries_go_through_onnx_in_the_documents_space(minilm: Any, onnx: OnnxQueryModel) -> None:
    """Queries in float32 ONNX, documents in bfloat16 torch: one vector space (cosine >= 0.9999)."""
    embedder = Embedder(minilm, precision="bfloat16", fast_queries=True)
    try:
        assert embedder.query_model is onnx  # the process's one session
        query = np.asarray(await embedder.embed(TEXTS[2]))
        document = (await embedder.embed_many([TEXTS[2]]))[0]
    finally:
        embedder.close()
    assert np.array_equal(query, onnx.encode(TEXTS[2]) / np.linalg.norm(onnx.encode(TEXTS[2])))
    assert float(query @ document) >= 0.9999
    assert not np.array_equal(query, document)  # two paths really ran


def test_a_process_that_finds_an_export_under_way_waits_for_it(
    good_graph: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replicas starting together: while one holds the export lock, another that found no graph waits for
    it, then loads its file instead of exporting too."""
    import threading

    checked = threading.Event()
    real_try = query_model.try_cached

    def try_cached(path: Path, model_dir: Path, rejected: Any) -> Any:
        found = real_try(path, model_dir, rejected)
        checked.set()
        return found

    monkeypatch.setattr(query_model, "try_cached", try_cached)
    exports, found = Exports(good_graph), []
    with query_model.export_lock(tmp_path):  # the other replica, exporting
        waiter = threading.Thread(
            target=lambda: found.append(load_query_model(bundled_minilm_path(), tmp_path, exports))
        )
        waiter.start()
        assert checked.wait(60), "the waiter never looked for the graph"  # and found none
        query_export.write_atomically(tmp_path / good_graph.name, good_graph.read_bytes())
    waiter.join(60)
    assert len(found) == 1 and found[0] is not None
    assert exports.calls == 0
