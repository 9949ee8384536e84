"""Retrieval quality and cost on SciFact (BEIR): ``python -m bench.rag [--path DIR] [--data DIR]``.

1. Ingests corpus.jsonl (5,183 abstracts) through ``fluido ingest``'s own function into a store, timed. A
   store already in ``--path`` is re-used: re-ingesting unchanged content is a no-op.
2. Splits the 809 train claims 70/30 by a hash of the query id (deterministic; no other split is used):
   fusion's k and weights are tuned on the 70 % part only, and the 30 % part is reported as held-out.
3. Runs every claim through ``Retrieval.search`` (the search endpoint's code path) for BM25 alone, dense
   alone, and fused with the shipped settings and with the tuned ones; prints nDCG@10 and recall@100 per
   part. Relevance is per document: a document's rank is that of its best chunk.
4. Search latency through HTTP (``bench/rag_http.py``): ``fluido serve`` on the store, POST
   /v1/vector_stores/{id}/search with max_num_results 10, p50/p99 for claims never embedded before at
   concurrency 1 (the target's setting) and under 8 concurrent clients (loaded), then for cached claims.

Prints figures; never fails on a time.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from middleware.rag.cli import ingest_paths
from middleware.rag.config import RagConfig
from middleware.rag.factory import build_retrieval
from middleware.rag.fusion import rrf
from middleware.rag.retrieval import Retrieval

REPO = Path(__file__).resolve().parents[1]
# The project's shared data sits next to the repository (../shared); a worktree sits one level deeper.
DATA = next(
    (p for p in (REPO.parent / "shared/data/scifact", REPO.parents[1] / "shared/data/scifact") if p.exists()),
    REPO.parent / "shared/data/scifact",
)
STORE = "scifact"
DEPTH = 200  # chunks per retriever: ~100 distinct abstracts, for recall@100
GRID_K = (5.0, 10.0, 20.0, 40.0, 60.0, 100.0)
GRID_DENSE = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # dense weight; BM25 gets 1 - it


def tuning_part(query_id: str) -> bool:
    """70 % of the queries, chosen by a hash of their id: the same on every run and machine."""
    return int(hashlib.sha256(query_id.encode()).hexdigest(), 16) % 100 < 70


def load_queries(data: Path) -> tuple[dict[str, str], dict[str, set[str]]]:
    queries = {}
    for line in (data / "queries_train.jsonl").read_bytes().splitlines():
        if line.strip():
            q = orjson.loads(line)
            queries[str(q["_id"])] = q["text"]
    qrels: dict[str, set[str]] = {}
    for line in (data / "qrels_train.tsv").read_text().splitlines()[1:]:
        qid, doc, score = line.split("\t")
        if int(score) > 0:
            qrels.setdefault(qid, set()).add(doc)
    return {q: t for q, t in queries.items() if q in qrels}, qrels


def documents_of(chunks: Sequence[str], doc_of: dict[str, str]) -> list[str]:
    seen: dict[str, None] = {}
    for chunk in chunks:
        seen.setdefault(doc_of[chunk], None)
    return list(seen)


def ndcg10(ranked: list[str], relevant: set[str]) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
    return dcg / ideal


def recall100(ranked: list[str], relevant: set[str]) -> float:
    return len(set(ranked[:100]) & relevant) / len(relevant)


def score(runs: dict[str, list[str]], qrels: dict[str, set[str]], ids: list[str]) -> tuple[float, float]:
    return (
        statistics.fmean(ndcg10(runs[q], qrels[q]) for q in ids),
        statistics.fmean(recall100(runs[q], qrels[q]) for q in ids),
    )


async def ranked_chunks(
    retrieval: Retrieval, store_id: str, queries: dict[str, str], mode: str, doc_of: dict[str, str]
) -> dict[str, list[str]]:
    out = {}
    for qid, text in queries.items():
        found = await retrieval.search([store_id], text, DEPTH, mode=mode)
        for p in found:
            doc_of[p.chunk_id] = str(p.attributes["_id"])
        out[qid] = [p.chunk_id for p in found]
    return out


async def quality(cfg: RagConfig, data: Path) -> RagConfig:
    retrieval = await asyncio.to_thread(build_retrieval, cfg, True)  # as `fluido ingest` builds it
    retrieval.start()
    try:
        cpu = time.process_time()
        report = await ingest_paths(retrieval, STORE, [data / "corpus.jsonl"])
        # CPU seconds (all threads) too: on a shared machine the wall time says more about the neighbours.
        print(f"Ingest: {report.documents} documents ({report.changed} new or changed), "
              f"{report.chunks} chunks, {report.seconds:.1f} s wall, "
              f"{time.process_time() - cpu:.1f} s CPU")  # fmt: skip
        queries, qrels = load_queries(data)
        tune = sorted(q for q in queries if tuning_part(q))
        held = sorted(q for q in queries if not tuning_part(q))
        print(f"Train claims with labels: {len(queries)}; tuning part {len(tune)}, held-out part {len(held)} "
              "(70/30 by SHA-256 of the query id)")  # fmt: skip
        doc_of: dict[str, str] = {}
        started, cpu = time.perf_counter(), time.process_time()
        dense = await ranked_chunks(retrieval, report.store_id, queries, "dense", doc_of)
        bm25 = await ranked_chunks(retrieval, report.store_id, queries, "bm25", doc_of)
        per_query = (time.perf_counter() - started) / (2 * len(queries)) * 1000
        cpu_query = (time.process_time() - cpu) / (2 * len(queries)) * 1000
        print(f"In-process search, depth {DEPTH}: {per_query:.1f} ms wall, {cpu_query:.1f} ms CPU per query "
              "and retriever (mean)")  # fmt: skip

        def fused(k: float, w: float) -> dict[str, list[str]]:
            return {
                q: documents_of([c for c, _ in rrf([dense[q], bm25[q]], [w, 1 - w], k)], doc_of)
                for q in queries
            }

        best = max(
            ((k, w) for k in GRID_K for w in GRID_DENSE), key=lambda kw: score(fused(*kw), qrels, tune)[0]
        )
        tuned = dataclasses.replace(
            cfg, rrf_k=best[0], dense_weight=best[1], bm25_weight=round(1 - best[1], 3)
        )
        print(f"Tuned on the tuning part: rrf_k = {tuned.rrf_k:g}, dense_weight = {tuned.dense_weight:g}, "
              f"bm25_weight = {tuned.bm25_weight:g}")  # fmt: skip
        runs = {
            "BM25": {q: documents_of(bm25[q], doc_of) for q in queries},
            "dense (MiniLM, HNSW)": {q: documents_of(dense[q], doc_of) for q in queries},
        }
        for label, variant in (
            (f"fused, shipped (k={cfg.rrf_k:g}, w={cfg.dense_weight:g}/{cfg.bm25_weight:g})", cfg),
            ("fused, tuned", tuned),
        ):
            retrieval.cfg = variant  # the search path itself, with these settings
            runs[label] = {
                q: documents_of(v, doc_of)
                for q, v in (
                    await ranked_chunks(retrieval, report.store_id, queries, "fused", doc_of)
                ).items()
            }
        retrieval.cfg = cfg
        print(
            f"\n  {'retriever':<36} {'tune nDCG@10':>12} {'R@100':>7}   {'held-out nDCG@10':>16} {'R@100':>7}"
        )
        for label, run in runs.items():
            t_ndcg, t_rec = score(run, qrels, tune)
            h_ndcg, h_rec = score(run, qrels, held)
            print(f"  {label:<36} {t_ndcg:>12.4f} {t_rec:>7.4f}   {h_ndcg:>16.4f} {h_rec:>7.4f}")
        all_ndcg = {label: score(run, qrels, sorted(queries))[0] for label, run in runs.items()}
        print("\n  all train claims, nDCG@10: " + ", ".join(f"{k} {v:.4f}" for k, v in all_ndcg.items()))
        return tuned
    finally:
        await retrieval.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA, help="the SciFact folder (BEIR format)")
    parser.add_argument("--path", help="where the store lives (kept); default: a temporary folder")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP latency part")
    parser.add_argument("--http-only", action="store_true", help="only the HTTP latency, on --path's store")
    args = parser.parse_args()
    from bench.rag_http import latency

    with tempfile.TemporaryDirectory(prefix="fluido-bench-rag-") as tmp:
        cfg = RagConfig(enabled=True, path=args.path or tmp, candidates=DEPTH)
        if not args.http_only:
            cfg = asyncio.run(quality(cfg, args.data))
        if not args.no_http:
            latency(dataclasses.replace(cfg, candidates=RagConfig().candidates), STORE, args.data)


if __name__ == "__main__":
    main()
