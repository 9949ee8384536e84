"""The ONNX twin of MiniLM for single texts: the torch model's vectors, checked before it is used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from bench.rag import DATA
from proxy.services import query_model
from proxy.services.embedder import Embedder, bundled_minilm_path, load_minilm
from proxy.services.query_model import OnnxQueryModel, load_query_model
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
def onnx(minilm: Any) -> OnnxQueryModel:
    made = load_query_model(minilm, bundled_minilm_path())
    assert made is not None
    return made


def test_the_onnx_model_gives_the_torch_models_vectors(minilm: Any, onnx: OnnxQueryModel) -> None:
    texts = TEXTS + scifact("queries_train.jsonl", 20) + scifact("corpus.jsonl", 10)
    want = np.asarray(minilm.encode(texts, normalize_embeddings=True), dtype=np.float32)
    got = np.stack([onnx.encode(t) for t in texts])
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosines = (got * want).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines


def test_the_tokenizer_neither_pads_nor_cuts_short(onnx: OnnxQueryModel) -> None:
    """The bundled tokenizer.json pads and truncates to 128 word pieces; a query must be read as it is,
    up to the model's 256."""
    assert len(onnx.tokenizer.encode("ok").ids) == 3  # [CLS] ok [SEP]
    assert len(onnx.tokenizer.encode(TEXTS[-1]).ids) == 256


def test_an_export_that_gives_other_vectors_is_not_used(minilm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tokenizer file as shipped (every text padded to 128 pieces, the padding then counted in the
    mean): vectors off the model's, refused."""
    from tokenizers import Tokenizer

    def as_shipped(model_dir: Path, max_pieces: int) -> Any:
        return Tokenizer.from_file(str(model_dir / "tokenizer.json"))

    monkeypatch.setattr(query_model, "tokenizer_of", as_shipped)
    assert load_query_model(minilm, bundled_minilm_path()) is None


def test_a_model_that_cannot_be_exported_leaves_single_texts_to_its_encode() -> None:
    model = CountingModel()  # no torch module inside to export
    embedder = Embedder(model, fast_queries=True)
    try:
        assert embedder.query_model is None
        assert np.isclose(np.linalg.norm(embedder.encode_one("a query")), 1.0)
    finally:
        embedder.close()
    assert model.calls == 1


async def test_queries_go_through_onnx_in_the_documents_space(minilm: Any, onnx: OnnxQueryModel) -> None:
    """Queries in float32 ONNX, documents in bfloat16 torch: one vector space (cosine >= 0.9999)."""
    embedder = Embedder(minilm, precision="bfloat16")
    embedder.query_model = onnx  # the fixture's, rather than a second export
    try:
        query = np.asarray(await embedder.embed(TEXTS[2]))
        document = (await embedder.embed_many([TEXTS[2]]))[0]
    finally:
        embedder.close()
    assert np.array_equal(query, onnx.encode(TEXTS[2]) / np.linalg.norm(onnx.encode(TEXTS[2])))
    assert float(query @ document) >= 0.9999
    assert not np.array_equal(query, document)  # two paths really ran
