"""RAG on a shared ``chroma run`` server: replicas see each other's writes, and an outage costs context,
never a request."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from middleware.rag.backend import ChromaBackend
from middleware.rag.chunking import Chunker, ChunkSpec, load_tokenizer
from middleware.rag.config import RagConfig
from middleware.rag.ingest import Document
from middleware.rag.retrieval import Retrieval
from proxy.services.embedder import Embedder, bundled_minilm_path, load_minilm
from tests.conftest import running, threaded
from tests.fakes.vllm import FakeVLLM
from tests.middleware.rag.conftest import rag_config, wait_ready
from tests.support.chroma_server import ChromaServer

QUESTION = "What cools the Zorblax reactor?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    chroma = ChromaServer(tmp_path_factory.mktemp("chroma") / "data")
    chroma.start()
    yield chroma
    chroma.stop()


@pytest.fixture(scope="module")
def replicas(
    server: ChromaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, FakeVLLM]]:
    """Two Fluido replicas on one Chroma server, each with its own local folder (its BM25 copies)."""
    tmp = tmp_path_factory.mktemp("replicas")
    shared = {"host": "127.0.0.1", "port": server.port, "timeout": 2.0}
    with threaded(FakeVLLM()) as fake:
        assert isinstance(fake, FakeVLLM)
        kb = {"stores": ["handbook"], "min_score": 0.3}
        with (
            running(rag_config(tmp / "a", fake, shared, kb=dict(kb))) as a,
            running(rag_config(tmp / "b", fake, shared, kb=dict(kb))) as b,
        ):
            wait_ready(a)
            wait_ready(b)
            yield a, b, fake


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="sk-admin", max_retries=0)


def add_file(url: str, store_id: str, name: str, text: str) -> str:
    c = sdk(url)
    file_id = c.files.create(file=(name, io.BytesIO(text.encode()), "text/plain"), purpose="assistants").id
    c.vector_stores.files.create(vector_store_id=store_id, file_id=file_id)
    return file_id


def test_a_document_ingested_through_one_replica_is_found_through_the_other(
    replicas: tuple[str, str, FakeVLLM],
) -> None:
    a, b, _ = replicas
    store = sdk(a).vector_stores.create(name="handbook")
    add_file(a, store.id, "reactor.txt", "The Zorblax reactor is cooled by liquid helium at four kelvin.")
    # B has not read this store yet: its first search loads it.
    assert [r.filename for r in sdk(b).vector_stores.search(vector_store_id=store.id, query=QUESTION)] == [
        "reactor.txt"
    ]
    # B now holds a snapshot; a later write through A must reach it by the generation poll.
    started = time.monotonic()
    glorp = add_file(a, store.id, "glorp.txt", "Glorpfish live only in the Quibble lagoon.")
    while glorp not in [
        r.file_id for r in sdk(b).vector_stores.search(vector_store_id=store.id, query="glorpfish lagoon")
    ]:
        assert time.monotonic() - started < 5, "replica B did not see the new document within 5 s"
        time.sleep(0.1)


async def test_both_indexes_of_a_second_replica_pick_up_new_and_deleted_documents(
    server: ChromaServer, tmp_path: Path
) -> None:
    """Dense search reads Chroma directly; BM25 is rebuilt from it when the store's generation moves."""
    model, chunker = load_minilm(), Chunker(load_tokenizer(bundled_minilm_path()), ChunkSpec(254, 48))

    def replica(name: str) -> Retrieval:
        cfg = RagConfig(enabled=True, path=str(tmp_path / name), host="127.0.0.1", port=server.port,
                        refresh_seconds=0.2)  # fmt: skip
        return Retrieval(cfg, ChromaBackend(cfg), Embedder(model=model), chunker)

    first, second = replica("a"), replica("b")
    first.start()
    second.start()
    try:
        store = await first.create_store("kb", {})
        await first.ingest(
            store.id, [Document("reactor", "reactor.txt", "The Zorblax reactor is cooled by helium.")]
        )
        for mode in ("dense", "bm25"):
            assert [p.file_id for p in await second.search([store.id], "Zorblax helium", 3, mode=mode)] == [
                "reactor"
            ]

        async def seen(query: str, wanted: str, present: bool) -> float:
            started = time.monotonic()
            while True:
                found = {mode: [p.file_id for p in await second.search([store.id], query, 3, mode=mode)]
                         for mode in ("dense", "bm25")}  # fmt: skip
                if all((wanted in ids) == present for ids in found.values()):
                    return time.monotonic() - started
                assert time.monotonic() - started < 5, found
                await asyncio.sleep(0.05)

        await first.ingest(
            store.id, [Document("glorp", "glorp.txt", "Glorpfish live only in the Quibble lagoon.")]
        )
        assert await seen("glorpfish Quibble lagoon", "glorp", True) < 5
        await first.remove(store.id, "reactor")
        assert await seen("Zorblax helium", "reactor", False) < 5
    finally:
        await first.close()
        await second.close()


def test_chroma_killed_and_restarted_mid_traffic_costs_context_never_a_request(
    replicas: tuple[str, str, FakeVLLM], server: ChromaServer
) -> None:
    a, _, fake = replicas
    stores = [s for s in sdk(a).vector_stores.list() if s.name == "handbook"]
    assert stores, "the replica test made the store"
    outcomes: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=a, headers={"authorization": "Bearer sk-admin"}, timeout=30) as client:
            while not stop.is_set():
                r = client.post("/v1/chat/completions",
                                json={"model": "kb", "messages": [{"role": "user", "content": QUESTION}]})  # fmt: skip
                outcomes.append((r.status_code, r.headers.get("x-fluido-rag", "")))

    def wait_for(outcome: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(o == outcome for _, o in outcomes[-5:]):
            assert time.monotonic() < deadline, f"never {outcome}: {outcomes[-5:]}"
            time.sleep(0.05)

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        wait_for("injected")
        server.stop()
        wait_for("unavailable")
        deadline = time.monotonic() + 30  # /ready reuses its checks for ready.cache_seconds
        while (ready := httpx.get(f"{a}/ready", timeout=30).json())["dependencies"]["rag_chroma"]["ok"]:
            assert time.monotonic() < deadline, ready
            time.sleep(0.2)
        assert ready["status"] == "ready"  # Chroma is optional: chat is still served
        r = httpx.post(f"{a}/v1/vector_stores/{stores[0].id}/search", json={"query": "x"},
                       headers={"authorization": "Bearer sk-admin"}, timeout=30)  # fmt: skip
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
        server.start()
        wait_for("injected")
    finally:
        stop.set()
        worker.join(timeout=30)
    assert {status for status, _ in outcomes} == {200}
    counted = httpx.get(f"{a}/metrics").text
    assert 'fluido_rag_requests_total{model="kb",result="unavailable"}' in counted
    assert any(m["messages"][0]["role"] == "user" for m in fake.requests)  # served without context meanwhile
