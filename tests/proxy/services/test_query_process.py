"""A process that only embeds queries (semantic cache, RAG searches, the embeddings classifier) never
imports torch; the first document batch loads it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson

from proxy.services.query_model import OnnxQueryModel, shared_query_model

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import numpy as np, orjson
    from middleware.cache.semantic import SemanticIndex
    from middleware.classify.centroids import CentroidClassifier
    from middleware.rag.config import RagConfig
    from middleware.rag.factory import build_retrieval
    from proxy.services.embedder import Embedder

    HEAVY = ("torch", "sentence_transformers", "transformers")

    async def main(scratch):
        seen = {}
        index = SemanticIndex(Embedder(), path=scratch + "/chroma")
        await index.add("k1", "what is the capital of France?", {"namespace": "n"})
        found = await index.search("what's France's capital?", {"namespace": "n"}, 0.5)
        retrieval = build_retrieval(RagConfig(enabled=True, path=scratch + "/rag", embedding_precision="auto"))
        store = await retrieval.create_store("notes", {})
        await retrieval.search([store.id], "a question", 5)
        classifier = CentroidClassifier({}, "short")
        seen["class"] = classifier.pick("Prove that the square root of 2 is irrational.")
        seen["hit"] = [c.key for c in found]
        seen["queries"] = [m for m in HEAVY if m in sys.modules]
        # A document batch: the torch model, loaded now, in the queries' vector space.
        query = np.asarray(await retrieval.embedder.embed("Vitamin D reduces respiratory infections."))
        document = (await retrieval.embedder.embed_many(["Vitamin D reduces respiratory infections."]))[0]
        seen["documents"] = [m for m in HEAVY if m in sys.modules]
        seen["cosine"] = float(query @ document)
        index.close()
        await retrieval.close()
        classifier.close()
        print(orjson.dumps(seen).decode())

    asyncio.run(main(sys.argv[1]))
    """
)


def test_queries_need_no_torch_and_documents_load_it(tmp_path: Path) -> None:
    onnx = shared_query_model()  # the session's graph, cached before the child starts (no export there)
    assert isinstance(onnx, OnnxQueryModel)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    seen = orjson.loads(done.stdout.splitlines()[-1])
    assert seen["hit"] == ["k1"] and seen["class"] == "reasoning"  # the queries were really embedded
    assert seen["queries"] == []
    assert "torch" in seen["documents"]  # the positive control: the same check sees torch once loaded
    assert seen["cosine"] >= 0.9999
