"""What a client cannot do to Fluido through a request: exceed the body limit on any route, put anything
odd into an echoed header, or make Fluido connect to a host that is not in its configuration."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.routing import Route

from proxy.app import create_app
from proxy.asgi import encode_headers
from proxy.config import Config, parse
from tests.conftest import OLLAMA_MODEL, VLLM_MODEL, running, upstream_for
from tests.fakes.ollama import FakeOllama
from tests.fakes.vllm import FakeVLLM

HI = [{"role": "user", "content": "hi"}]
LIMIT = 4096


def full_config(vllm: FakeVLLM, ollama: FakeOllama, **extra: Any) -> Config:
    return parse(
        {
            "server": {"max_body_bytes": LIMIT},
            "upstreams": {"vllm": upstream_for(vllm), "ollama": upstream_for(ollama)},
            "models": {
                "chat": {"targets": [{"upstream": "vllm", "model": VLLM_MODEL}]},
                "local": {"targets": [{"upstream": "ollama", "model": OLLAMA_MODEL}]},
            },
            "cache": {"enabled": True, "semantic": {"enabled": False}},
            **extra,
        }
    )


# -- body limits -------------------------------------------------------------------------------------
def body_routes(config: Config) -> list[tuple[str, str]]:
    """Every (method, path) of the app that takes a body: routes added later are covered without edits."""
    app = create_app(config)
    return [
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in sorted(route.methods or ())
        if method in ("POST", "PUT", "PATCH")
    ]


def test_every_route_that_takes_a_body_refuses_one_over_the_limit(vllm: FakeVLLM, ollama: FakeOllama) -> None:
    config = full_config(vllm, ollama)
    routes = body_routes(config)
    assert ("POST", "/v1/chat/completions") in routes and ("POST", "/admin/cache/purge") in routes
    big = orjson.dumps({"model": "chat", "messages": HI, "input": "x" * LIMIT, "namespace": "x" * LIMIT})
    with running(config) as url, httpx.Client(base_url=url, timeout=10) as client:
        for method, path in routes:
            small = client.request(
                method, path, content=orjson.dumps({"model": "chat", "messages": HI, "input": "x"})
            )
            assert small.status_code != 413, "positive control: a body under the limit is read"
            declared = client.request(method, path, content=big)
            chunked = client.request(method, path, content=iter([big[: LIMIT // 2], big[LIMIT // 2 :]]))
            for r in (declared, chunked):
                if small.status_code == 501:  # a route refused whatever it is sent reads no body at all
                    assert r.status_code == 501, (method, path, r.status_code)
                    continue
                assert r.status_code == 413, (method, path, r.status_code)
                error = r.json()["error"]
                # Ollama's door answers in Ollama's shape, {"error": "..."}; every other route in OpenAI's.
                assert error if path.startswith("/api/") else error["code"] == "request_too_large"
    assert not any(body.get("input") == "x" * LIMIT for body in vllm.requests)


def test_a_body_sent_to_a_route_that_takes_none_is_not_buffered(vllm: FakeVLLM, ollama: FakeOllama) -> None:
    """GET routes never read a body: a huge one is left unread, and Fluido answers and stays up."""
    with running(full_config(vllm, ollama)) as url, httpx.Client(base_url=url, timeout=10) as client:
        chunks = (b"x" * 65536 for _ in range(160))  # 10 MB, streamed
        r = client.request("GET", "/v1/models", content=chunks)
        assert r.status_code == 200
        assert client.get("/health").status_code == 200


BODY_TIMEOUT = 0.6


def trickle(url: str, method: str, path: str, body: bytes, every: float) -> tuple[bytes, float]:
    """Send ``body`` a byte every ``every`` seconds after the headers; Fluido's reply and when it came."""
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    stop = threading.Event()
    with socket.create_connection((host, int(port)), timeout=BODY_TIMEOUT + 10) as sock:
        sock.sendall(head)
        start = time.monotonic()

        def drip() -> None:
            for i in range(len(body)):
                if stop.wait(every):
                    return
                try:
                    sock.sendall(body[i : i + 1])
                except OSError:
                    return

        sender = threading.Thread(target=drip, daemon=True)
        sender.start()
        try:
            data = b""
            while b"\r\n\r\n" not in data and (part := sock.recv(65536)):
                data += part
            took = time.monotonic() - start
            head_part, _, rest = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head_part.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(rest) < length and (part := sock.recv(65536)):
                rest += part
        finally:
            stop.set()
            sender.join(timeout=5)
    return head_part + b"\r\n\r\n" + rest, took


def test_every_route_that_takes_a_body_cuts_off_one_that_trickles(vllm: FakeVLLM, ollama: FakeOllama) -> None:
    """``server.body_timeout`` bounds the whole body, however steadily its bytes come, on every door."""
    config = full_config(vllm, ollama, server={"max_body_bytes": LIMIT, "body_timeout": BODY_TIMEOUT})
    routes = body_routes(config)
    assert ("POST", "/api/chat") in routes and ("POST", "/v1/chat/completions") in routes
    body = orjson.dumps({"model": "chat", "messages": HI, "input": "x", "stream": False})
    with running(config) as url:
        for method, path in routes:
            # Positive control: the same body, trickled fast enough to arrive in time, is read.
            control, _ = trickle(url, method, path, body, every=0.0)
            if control.startswith(b"HTTP/1.1 501"):  # a route refused whatever it is sent reads no body
                continue
            assert not control.startswith(b"HTTP/1.1 408"), (method, path, control[:200])
            # A byte every 50 ms: the connection is never idle, yet the body takes far longer than allowed.
            reply, took = trickle(url, method, path, body, every=0.05)
            assert reply.startswith(b"HTTP/1.1 408"), (method, path, reply[:200])
            assert BODY_TIMEOUT <= took < BODY_TIMEOUT + 2, (method, path, took)
            error = orjson.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]
            # Ollama's door answers in Ollama's shape, {"error": "..."}; every other route in OpenAI's.
            if path.startswith("/api/"):
                assert "did not arrive within" in error, (path, error)
            else:
                assert error["code"] == "request_timeout", (path, error)


# -- echoed headers ----------------------------------------------------------------------------------
def raw_request(url: str, request_id: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    body = orjson.dumps({"model": "chat", "messages": HI})
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nx-request-id: " + request_id + b"\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
    return data.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize(
    "request_id",
    [
        b"a" * 129,
        b"abc def",
        b"caf\xe9",
        b"abc\tdef",
        b"<script>",
        b"x;y=z",
        b"\xff\xfe",
        b"a%0d%0aset-cookie:x",
    ],
)
def test_an_odd_request_id_is_replaced_not_echoed(
    vllm: FakeVLLM, ollama: FakeOllama, request_id: bytes
) -> None:
    with running(full_config(vllm, ollama)) as url:
        head = raw_request(url, request_id)
        sane = raw_request(url, b"trace-42.a:b_c")
    echoed = [line for line in head.split(b"\r\n") if line.lower().startswith(b"x-request-id:")]
    assert len(echoed) == 1 and request_id not in echoed[0]
    assert b"x-request-id: trace-42.a:b_c" in sane.lower(), "positive control: a sane id is echoed"
    assert b"set-cookie" not in head.lower()


def test_header_values_lose_control_characters_and_are_cut() -> None:
    (pair,) = encode_headers([("x-fluido-note", "ok\r\nset-cookie: evil=1\x00" + "y" * 1000)])
    assert b"\r" not in pair[1] and b"\n" not in pair[1] and b"\x00" not in pair[1]
    assert len(pair[1]) <= 256
    assert encode_headers([("bad name\r\n", "v")]) == [], "a name that is not a token is dropped"
    assert encode_headers([("x-ok", "plain value")]) == [(b"x-ok", b"plain value")]


# -- no client-chosen hosts --------------------------------------------------------------------------
class Canary:
    """A TCP listener that only counts who connects: nothing Fluido does may reach it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    c = Canary()
    yield c
    c.close()


def test_nothing_a_client_sends_makes_fluido_connect_elsewhere(
    vllm: FakeVLLM, ollama: FakeOllama, canary: Canary
) -> None:
    hosts = {
        "base_url": canary.url, "api_base": canary.url + "/v1", "api_base_url": canary.url, "url": canary.url,
        "host": f"127.0.0.1:{canary.port}", "endpoint": canary.url, "server_url": canary.url,
        "ollama_host": canary.url, "upstream": canary.url, "options": {"host": canary.url},
    }  # fmt: skip
    image = {"type": "image_url", "image_url": {"url": canary.url + "/cat.png"}}
    headers = {
        "x-forwarded-host": f"127.0.0.1:{canary.port}", "forwarded": f"host=127.0.0.1:{canary.port}",
        "x-upstream": canary.url, "x-base-url": canary.url, "origin": canary.url, "referer": canary.url,
    }  # fmt: skip
    models = ["chat", "local", canary.url, canary.url + "/v1", f"127.0.0.1:{canary.port}", "vllm", "ollama"]
    with running(full_config(vllm, ollama)) as url, httpx.Client(base_url=url, timeout=10) as client:
        for model in models:
            for stream in (False, True):
                body = {
                    "model": model,
                    "stream": stream,
                    "messages": [{"role": "user", "content": [image]}],
                    **hosts,
                }
                client.post("/v1/chat/completions", json=body, headers=headers).read()
            client.post(
                "/v1/embeddings", json={"model": model, "input": canary.url, **hosts}, headers=headers
            )
            ollama_chat = {"model": model, "messages": [{"role": "user", "content": canary.url}], **hosts}
            client.post("/api/chat", json=ollama_chat, headers=headers).read()
            ollama_generate = {"model": model, "prompt": canary.url, **hosts}
            client.post("/api/generate", json=ollama_generate, headers=headers).read()
        client.get("/v1/models", headers={"host": f"127.0.0.1:{canary.port}"})
        client.get("/ready", headers=headers)
    assert canary.connections == 0
    assert vllm.requests, "positive control: the configured upstream was reached"
