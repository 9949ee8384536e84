"""Shared test plumbing: fake upstreams and Fluido itself, each on a real socket in its own thread."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import uvicorn

from proxy.app import create_app
from proxy.config import Config, parse
from proxy.services.query_model import CACHE_ENV
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM
from tests.support.redis_server import RedisServer

OLLAMA_MODEL = "llama3.2:1b"
VLLM_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chats(fake: FakeOllama | FakeVLLM) -> list[dict[str, Any]]:
    """The chat requests a fake got, in order: Ollama's start-up preload (no messages) left out, since it
    may land before or after them."""
    return [body for body in fake.requests if body.get("messages")]


def upstream_for(fake: FakeOllama | FakeVLLM, **options: Any) -> dict[str, Any]:
    """The [upstreams.X] table that points at a fake."""
    if isinstance(fake, FakeOllama):
        return {"kind": "ollama", "url": fake.url, **options}
    return {"kind": "openai", "url": fake.url + "/v1", **options}


def model_of(fake: FakeOllama | FakeVLLM) -> str:
    return OLLAMA_MODEL if isinstance(fake, FakeOllama) else VLLM_MODEL


def config(*fakes: FakeOllama | FakeVLLM, alias: str = "chat", **options: Any) -> Config:
    """One alias served by the given fakes in order; ``options`` apply to every upstream."""
    upstreams = {f"up{i}": upstream_for(f, **options) for i, f in enumerate(fakes)}
    targets = [{"upstream": f"up{i}", "model": model_of(f)} for i, f in enumerate(fakes)]
    return parse({"upstreams": upstreams, "models": {alias: {"targets": targets}}})


@contextmanager
def running(cfg: Config, log_sink: BinaryIO | None = None) -> Iterator[str]:
    """Fluido serving ``cfg`` from a background thread; yields its base URL. Logs go to ``log_sink``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(cfg, log_sink=log_sink if log_sink is not None else io.BytesIO())
    # The protocol `fluido serve` runs, so clients meet the same wire behaviour as in production.
    protocol = "proxy.http_protocol:HeaderDeadlineProtocol"
    server = uvicorn.Server(
        uvicorn.Config(app, loop="uvloop", http=protocol, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("Fluido did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@contextmanager
def threaded(fake: FakeOllama | FakeVLLM) -> Iterator[FakeOllama | FakeVLLM]:
    fake.start_in_thread()
    try:
        yield fake
    finally:
        fake.stop_thread()


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with threaded(FakeOllama()) as fake:
        assert isinstance(fake, FakeOllama)
        yield fake


@pytest.fixture
def vllm() -> Iterator[FakeVLLM]:
    with threaded(FakeVLLM()) as fake:
        assert isinstance(fake, FakeVLLM)
        yield fake


@pytest.fixture(params=["ollama", "vllm"])
def upstream(request: pytest.FixtureRequest) -> Iterator[FakeOllama | FakeVLLM]:
    """Each fake upstream in turn: tests using it run against both adapters."""
    with threaded(FakeOllama() if request.param == "ollama" else FakeVLLM()) as fake:
        yield fake


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(redis_session: RedisServer) -> Iterator[RedisServer]:
    """The session's Redis server, emptied for each test (and restarted if a test killed it)."""
    import redis as redis_client

    if not redis_session.running:
        redis_session.start()
    redis_client.Redis.from_url(redis_session.url).flushall()
    yield redis_session


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """MiniLM's ONNX graph for queries is exported once per test session (in a child, the first time a
    test needs it) into a directory of the session's own, inherited by the processes tests start."""
    directory = tmp_path_factory.mktemp("model-cache")
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(directory)
    yield directory
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before
