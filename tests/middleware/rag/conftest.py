"""Fluido with RAG on, against the fake vLLM: the fixtures the RAG tests share."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config import parse
from tests.conftest import OLLAMA_MODEL, VLLM_MODEL, running, threaded, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

KEYS = {"ADMIN_KEY": "sk-admin", "READER_KEY": "sk-reader", "NARROW_KEY": "sk-narrow"}


def rag_config(
    tmp: Path,
    fake: FakeVLLM,
    rag: dict[str, Any] | None = None,
    ollama: FakeOllama | None = None,
    **models: Any,
) -> Any:
    """Aliases: ``chat`` (no RAG) and one per keyword, each ``{"rag": {...}}`` on the fake vLLM, or
    on the fake Ollama when the table says ``"upstream": "ollama"``."""
    upstreams = {"vllm": upstream_for(fake)}
    if ollama is not None:
        upstreams["ollama"] = upstream_for(ollama)

    def target(table: dict[str, Any]) -> dict[str, Any]:
        up = table.pop("upstream", "vllm")
        return {"upstream": up, "model": OLLAMA_MODEL if up == "ollama" else VLLM_MODEL}

    return parse(
        {
            "keys": {
                "admin": {"key_env": "ADMIN_KEY", "admin": True},
                "reader": {"key_env": "READER_KEY"},
                "narrow": {"key_env": "NARROW_KEY"},
            },
            "upstreams": upstreams,
            "models": {
                "chat": {"targets": [{"upstream": "vllm", "model": VLLM_MODEL}]},
                **{alias: {"targets": [target(r)], "rag": r} for alias, r in models.items()},
            },
            "rag": {"enabled": True, "path": str(tmp / "rag"), "refresh_seconds": 0.2,
                    "readers": {"narrow": ["handbook"]}, **(rag or {})},
        },
        KEYS,
    )  # fmt: skip


def wait_ready(url: str, timeout: float = 180) -> None:
    """Retrieval loads its model after start-up: wait until /ready reports it."""
    deadline = time.monotonic() + timeout
    while not httpx.get(f"{url}/ready", timeout=10).json()["dependencies"]["rag_chroma"]["ok"]:
        assert time.monotonic() < deadline, "retrieval never became ready"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def rag_both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeVLLM, FakeOllama]]:
    """One Fluido for a module, on a fake vLLM and a fake Ollama. Aliases reading the store ``handbook``:
    ``kb`` (vLLM), ``kb_ollama``, ``tiny`` (a 300-token context window), ``late`` (context before the last
    user turn, the query from the last two user turns); ``ghost`` reads a store that does not exist."""
    tmp: Path = tmp_path_factory.mktemp("rag")
    with threaded(FakeVLLM()) as fake, threaded(FakeOllama()) as ollama:
        assert isinstance(fake, FakeVLLM) and isinstance(ollama, FakeOllama)
        cfg = rag_config(
            tmp, fake, ollama=ollama,
            kb={"stores": ["handbook"], "top_k": 3, "min_score": 0.3},
            kb_ollama={"stores": ["handbook"], "min_score": 0.3, "upstream": "ollama"},
            tiny={"stores": ["handbook"], "min_score": 0.3, "context_window": 300},
            late={"stores": ["handbook"], "min_score": 0.3, "where": "before_last_user", "query_turns": 2},
            ghost={"stores": ["no-such-store"]},
        )  # fmt: skip
        with running(cfg) as url:
            wait_ready(url)
            yield url, fake, ollama


@pytest.fixture(scope="module")
def rag_fluido(rag_both: tuple[str, FakeVLLM, FakeOllama]) -> tuple[str, FakeVLLM]:
    return rag_both[0], rag_both[1]
