"""File uploads are held to a size cap and the body deadline, however the client sends them."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from proxy.config import parse
from tests.conftest import VLLM_MODEL, running, threaded, upstream_for
from tests.fakes.vllm import FakeVLLM
from tests.middleware.rag.conftest import KEYS, wait_ready

MAX_FILE = 4096
BOUNDARY = "fluidotestboundary"


@pytest.fixture(scope="module")
def small_uploads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Fluido taking files of at most 4 KiB, and bodies that arrive within 1 s."""
    tmp: Path = tmp_path_factory.mktemp("uploads")
    with threaded(FakeVLLM()) as fake:
        cfg = parse(
            {
                "server": {"body_timeout": 1.0},
                "keys": {"admin": {"key_env": "ADMIN_KEY", "admin": True}},
                "upstreams": {"vllm": upstream_for(fake)},
                "models": {"chat": {"targets": [{"upstream": "vllm", "model": VLLM_MODEL}]}},
                "rag": {"enabled": True, "path": str(tmp / "rag"), "max_file_bytes": MAX_FILE},
            },
            KEYS,
        )
        with running(cfg) as url:
            wait_ready(url)
            yield url


def multipart(text: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\n{text}\r\n--{BOUNDARY}--\r\n"
    ).encode()


def chunked(body: bytes, piece: int = 1024) -> Iterator[bytes]:
    for i in range(0, len(body), piece):
        yield body[i : i + piece]


HEADERS = {"authorization": "Bearer sk-admin", "content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def test_a_small_upload_sent_chunked_is_accepted(small_uploads: str) -> None:
    """The positive control: a chunked upload (no Content-Length) within the limits is stored."""
    reply = httpx.post(
        f"{small_uploads}/v1/files", headers=HEADERS, content=chunked(multipart("hello " * 10))
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["object"] == "file" and reply.json()["bytes"] == 60


def test_a_chunked_upload_past_the_cap_is_refused_with_413(small_uploads: str) -> None:
    """Without a Content-Length the size is only known while reading: the read stops at the cap."""
    body = multipart("x" * (200 * MAX_FILE))
    reply = httpx.post(f"{small_uploads}/v1/files", headers=HEADERS, content=chunked(body, 64 * 1024))
    assert reply.status_code == 413, reply.text
    assert reply.json()["error"]["type"] == "invalid_request_error"


def test_a_file_over_the_limit_inside_the_envelope_is_refused(small_uploads: str) -> None:
    reply = httpx.post(f"{small_uploads}/v1/files", headers=HEADERS, content=multipart("x" * (MAX_FILE + 1)))
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "file", reply.text


def test_a_trickled_upload_is_cut_off_at_the_body_deadline(small_uploads: str) -> None:
    parts = urlsplit(small_uploads)
    body = multipart("slow " * 20)
    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer sk-admin\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head + body[:10])  # then nothing more: the body never completes
        started = time.monotonic()
        answer = sock.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 408"), answer[:200]
    assert 0.9 <= time.monotonic() - started < 8
