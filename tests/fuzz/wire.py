"""Sending one fuzz case over a real socket, the way it asks to be sent, with a timeout that marks a hang."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx

from tests.fuzz.cases import Case
from tests.fuzz.oracle import Reply

HANG_SECONDS = 15.0  # nothing behind the fuzzed Fluido is slow: no reply by then is a hang
SLOW_PIECES = 5
SLOW_GAP = 0.1


def send(client: httpx.Client, case: Case) -> Reply:
    if case.transport in ("truncated", "leave"):
        return _cut(str(client.base_url), case)
    content: bytes | Iterator[bytes] = case.body
    if case.transport == "slow":
        content = _trickle(case.body)
    try:
        r = client.request(case.method, case.path, content=content, headers=list(case.headers))
    except httpx.TimeoutException:
        return Reply(0, {}, b"", hung=True)
    except httpx.TransportError:  # closed or reset without a (complete) reply
        return Reply(0, {}, b"")
    return Reply(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)


def _trickle(body: bytes) -> Iterator[bytes]:
    size = max(1, -(-len(body) // SLOW_PIECES))
    for i in range(0, len(body), size):
        if i:
            time.sleep(SLOW_GAP)
        yield body[i : i + size]


def _cut(base_url: str, case: Case) -> Reply:
    """Declare the whole body, send half of it, then stop writing ("truncated") or hang up ("leave")."""
    url = urlsplit(base_url)
    head = [f"{case.method} {case.path} HTTP/1.1", f"host: {url.netloc}", f"content-length: {len(case.body)}"]
    head += [f"{k}: {v}" for k, v in case.headers]
    with socket.create_connection((url.hostname, url.port), timeout=HANG_SECONDS) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + case.body[: len(case.body) // 2])
        if case.transport == "leave":
            return Reply(0, {}, b"")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            return Reply(0, {}, data, hung=True)
        except ConnectionResetError:
            pass
    return _parse(data)


def _parse(data: bytes) -> Reply:
    if not data.startswith(b"HTTP/"):
        return Reply(0, {}, data)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        decoded = b""
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            decoded += rest[:size]
            body = rest[size + 2 :]
        body = decoded
    return Reply(status, headers, body)
