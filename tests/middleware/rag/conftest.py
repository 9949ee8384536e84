"""Fluido with RAG on, against the fake vLLM: the fixtures the RAG tests share."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config import parse
from tests.conftest import VLLM_MODEL, running, threaded, upstream_for
from tests.fakes.vllm import FakeVLLM

KEYS = {"ADMIN_KEY": "sk-admin", "READER_KEY": "sk-reader", "NARROW_KEY": "sk-narrow"}


def rag_config(tmp: Path, fake: FakeVLLM, rag: dict[str, Any] | None = None, **models: Any) -> Any:
    return parse(
        {
            "keys": {
                "admin": {"key_env": "ADMIN_KEY", "admin": True},
                "reader": {"key_env": "READER_KEY"},
                "narrow": {"key_env": "NARROW_KEY"},
            },
            "upstreams": {"vllm": upstream_for(fake)},
            "models": {
                "chat": {"targets": [{"upstream": "vllm", "model": VLLM_MODEL}]},
                **{alias: {"targets": [{"upstream": "vllm", "model": VLLM_MODEL}], "rag": r} for alias, r in models.items()},
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
def rag_fluido(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeVLLM]]:
    """One Fluido for a module: the alias ``kb`` injects from the store named ``handbook``."""
    tmp: Path = tmp_path_factory.mktemp("rag")
    with threaded(FakeVLLM()) as fake:
        assert isinstance(fake, FakeVLLM)
        cfg = rag_config(tmp, fake, kb={"stores": ["handbook"], "top_k": 3, "min_score": 0.3})
        with running(cfg) as url:
            wait_ready(url)
            yield url, fake
