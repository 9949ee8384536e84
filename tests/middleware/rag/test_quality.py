"""Retrieval quality on a small held-out part of SciFact: fusion must not lose to the better retriever.

The queries are train claims from the 30 % part that ``bench.rag`` never tunes on (split by a hash of the
query id); the corpus is their relevant abstracts plus 200 others picked by a hash of the document id.
The shipped fusion settings were tuned on the other 70 % of the claims.
"""

from __future__ import annotations

import hashlib
import statistics
from pathlib import Path

import orjson
import pytest

from bench.rag import DATA, documents_of, load_queries, ndcg10, tuning_part
from middleware.rag.config import RagConfig
from middleware.rag.factory import build_retrieval
from middleware.rag.sources import record_document

QUERIES = 40
DISTRACTORS = 200

pytestmark = pytest.mark.skipif(
    not (DATA / "corpus.jsonl").exists(), reason="SciFact is not next to the repo"
)


def subset() -> tuple[dict[str, str], dict[str, set[str]], list[dict[str, object]]]:
    queries, qrels = load_queries(DATA)
    chosen = sorted(q for q in queries if not tuning_part(q))[:QUERIES]
    relevant = {d for q in chosen for d in qrels[q]}
    corpus = [
        orjson.loads(line) for line in (DATA / "corpus.jsonl").read_bytes().splitlines() if line.strip()
    ]
    others = sorted(
        (d for d in corpus if d["_id"] not in relevant),
        key=lambda d: hashlib.sha256(d["_id"].encode()).hexdigest(),
    )[:DISTRACTORS]
    docs = [d for d in corpus if d["_id"] in relevant] + others
    return {q: queries[q] for q in chosen}, {q: qrels[q] for q in chosen}, docs


async def test_fused_search_is_at_least_as_good_as_the_better_retriever(tmp_path: Path) -> None:
    queries, qrels, docs = subset()
    retrieval = build_retrieval(RagConfig(enabled=True, path=str(tmp_path / "rag")))
    try:
        store = await retrieval.create_store("scifact-heldout", {})
        await retrieval.ingest(store.id, [record_document(d, "corpus") for d in docs])
        scores = {}
        for mode in ("bm25", "dense", "fused"):
            per_query = []
            for qid, text in queries.items():
                found = await retrieval.search([store.id], text, 30, mode=mode)
                ranked = documents_of(
                    [p.chunk_id for p in found], {p.chunk_id: str(p.attributes["_id"]) for p in found}
                )
                per_query.append(ndcg10(ranked, qrels[qid]))
            scores[mode] = statistics.fmean(per_query)
    finally:
        await retrieval.close()
    print(scores)  # shown with pytest -s
    best_single = max(scores["bm25"], scores["dense"])
    assert scores["fused"] >= best_single - 0.01, scores
    assert min(scores["bm25"], scores["dense"]) > 0.5, scores  # both retrievers work at all
