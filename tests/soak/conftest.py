"""Fixtures for the load and fault tests: real processes, always stopped, whatever ends the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import Child, Fluido, PacedUpstream

MODEL = "paced-model"


def fluido_config(upstream_url: str, **sections: Any) -> dict[str, Any]:
    """Fluido as shipped (access log, metrics, classifier, exact cache), in front of one upstream.

    The semantic cache is off unless a test turns it on: it loads an embedding model, which is not what
    these tests measure. The connection pool is sized for the test's concurrency.
    """
    upstream = {"kind": "openai", "url": upstream_url + "/v1", "max_connections": 1024}
    upstream |= sections.pop("upstream", {})
    config: dict[str, Any] = {
        "cache": {"semantic": {"enabled": False}},
        "upstreams": {"paced": upstream},
        "models": {"chat": {"targets": [{"upstream": "paced", "model": MODEL}]}},
    }
    for name, section in sections.items():
        merged = dict(config.get(name, {}))
        merged.update(section)
        config[name] = merged
    return config


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Every process a test starts; all are stopped when it ends."""
    started: list[Child] = []
    yield started
    for child in reversed(started):
        child.stop(timeout=10)


@pytest.fixture
def paced(tmp_path: Path, children: list[Child]) -> Callable[..., PacedUpstream]:
    def start(**options: Any) -> PacedUpstream:
        upstream = PacedUpstream(tmp_path, **options)
        children.append(upstream)
        upstream.start()
        return upstream

    return start


@pytest.fixture
def fluido(tmp_path: Path, children: list[Child]) -> Callable[..., Fluido]:
    def start(
        config: Mapping[str, Any], env: Mapping[str, str] | None = None, name: str = "fluido"
    ) -> Fluido:
        server = Fluido(tmp_path, config, env, name=name)
        children.append(server)
        server.start()
        return server

    return start
