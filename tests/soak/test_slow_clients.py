"""Slow clients cost bounded memory and are cut off in time, and nobody else waits for them.

A client that never reads its stream must not make Fluido buffer the upstream's reply: backpressure has to
reach the upstream. A client that trickles its headers or its body is answered 408 and disconnected after
``server.header_timeout`` / ``server.body_timeout``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import orjson

from tests.soak.conftest import fluido_config
from tests.soak.load import ANSWERED, Deadline, chat_body, request, scale, session
from tests.support.processes import Fluido, PacedUpstream
from tests.support.procfs import rss_bytes

NON_READERS = int(scale(12, 40))
TOKENS = 200_000  # pieces of 1 KB: 200 MB a stream, far more than every buffer on the way can hold
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
TRICKLERS = int(scale(10, 50))
MIB = 1024 * 1024


def raw_request(body: bytes, extra_headers: str = "") -> tuple[bytes, bytes]:
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra_headers}\r\n"
    )
    return head.encode(), body


async def connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection; and when it did (or ``inf``)."""
    loop = asyncio.get_running_loop()
    data = b""
    try:
        async with asyncio.timeout(limit_s):
            while chunk := await loop.sock_recv(sock, 65536):
                data += chunk
    except TimeoutError:
        return data, float("inf")
    except ConnectionResetError:
        pass
    return data, time.monotonic()


async def trickle(sock: socket.socket, data: bytes, every: float, stop: asyncio.Event) -> None:
    """Send ``data`` one byte at a time until it is all sent or the server has closed."""
    loop = asyncio.get_running_loop()
    for i in range(len(data)):
        if stop.is_set():
            return
        try:
            await loop.sock_sendall(sock, data[i : i + 1])
        except OSError:
            return
        await asyncio.sleep(every)


def slow_config(upstream: PacedUpstream) -> dict[str, object]:
    return fluido_config(
        upstream.url, server={"header_timeout": HEADER_TIMEOUT, "body_timeout": BODY_TIMEOUT}
    )


async def test_clients_that_never_read_hold_bounded_memory_while_others_are_served(
    paced: Callable[..., PacedUpstream], fluido: Callable[..., Fluido]
) -> None:
    upstream = paced(tokens=TOKENS, interval=0.0, piece_bytes=1024)
    server = fluido(slow_config(upstream))
    before = rss_bytes(server.pid)

    head, body = raw_request(orjson.dumps(chat_body("large, never read", stream=True)))
    socks: list[socket.socket] = []
    try:
        socks += [await connect(server.port, rcvbuf=4096) for _ in range(NON_READERS)]
        for sock in socks:
            await asyncio.get_running_loop().sock_sendall(sock, head + body)

        # Wait for the stall: every non-reader's stream started, and the upstream can write no more.
        last = -1

        def stalled() -> bool:
            nonlocal last
            stats = upstream.stats()
            sent, last = last, stats["bytes_sent"]
            return stats["in_flight"] == NON_READERS and sent == last

        assert await Deadline(30).poll(stalled, every=1.0), upstream.stats()
        stats = upstream.stats()
        held = rss_bytes(server.pid)
        async with session() as s:
            t0 = time.monotonic()
            other = await request(
                s, server.url, chat_body("meanwhile", stream=False, max_tokens=5), within=10
            )
            other_s = time.monotonic() - t0
    finally:
        for sock in socks:
            sock.close()
    print(
        f"\nNon-reading clients: {NON_READERS} streams stalled; Fluido RSS {before / MIB:.1f} -> "
        f"{held / MIB:.1f} MiB (+{(held - before) / NON_READERS / MIB:.2f} MiB a client); the upstream wrote "
        f"{stats['bytes_sent'] / MIB:.1f} MiB in all and finished {stats['finished']} of them; "
        f"another client was answered in {other_s * 1000:.0f} ms"
    )
    # Backpressure reached the upstream: no stream could be written to its end.
    assert stats["finished"] == 0
    # A few MiB per stalled stream (socket and parser buffers, and what the allocator keeps of the traffic
    # that passed), not the 200 MB each reply would be: bounded by the buffers, not by the reply.
    per_client = (held - before) / NON_READERS
    assert per_client < 4 * MIB, f"{per_client / MIB:.1f} MiB held per client that never reads"
    assert other.outcome == ANSWERED and other_s < 5


async def test_clients_that_trickle_headers_or_body_are_cut_off_without_blocking_others(
    paced: Callable[..., PacedUpstream], fluido: Callable[..., Fluido]
) -> None:
    upstream = paced(tokens=5, interval=0.0)
    server = fluido(slow_config(upstream))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    head, body = raw_request(orjson.dumps(chat_body("slow", stream=False)))

    async def slow_headers() -> tuple[bytes, float, float]:
        sock = await connect(server.port)
        start = time.monotonic()
        sender = asyncio.create_task(trickle(sock, head + body, 0.2, stop))
        data, closed = await read_until_closed(sock, HEADER_TIMEOUT + 10)
        sender.cancel()
        sock.close()
        return data, start, closed

    async def slow_body() -> tuple[bytes, float, float]:
        sock = await connect(server.port)
        await loop.sock_sendall(sock, head)  # the headers at once, then the body byte by byte
        start = time.monotonic()
        sender = asyncio.create_task(trickle(sock, body, 0.2, stop))
        data, closed = await read_until_closed(sock, BODY_TIMEOUT + 10)
        sender.cancel()
        sock.close()
        return data, start, closed

    async def prompt_in_pieces() -> bytes:
        """Positive control: headers and body in pieces, all within the deadlines, are answered."""
        sock = await connect(server.port)
        for piece in (head[:20], head[20:], body[:10], body[10:]):
            await loop.sock_sendall(sock, piece)
            await asyncio.sleep(0.3)
        data, _ = await read_until_closed(sock, 5)
        sock.close()
        return data

    async def others() -> list[float]:
        waits = []
        async with session() as s:
            for i in range(10):
                t0 = time.monotonic()
                r = await request(s, server.url, chat_body(f"other {i}", stream=True), within=10)
                assert r.outcome == ANSWERED, r
                waits.append(time.monotonic() - t0)
                await asyncio.sleep(0.2)
        return waits

    slow = [slow_headers() for _ in range(TRICKLERS)] + [slow_body() for _ in range(TRICKLERS)]
    results = await asyncio.gather(*slow, prompt_in_pieces(), others())
    stop.set()
    cut = results[: 2 * TRICKLERS]
    control, waits = results[-2], results[-1]
    assert isinstance(control, bytes) and isinstance(waits, list)
    header_cut = [closed - start for _, start, closed in cut[:TRICKLERS]]
    body_cut = [closed - start for _, start, closed in cut[TRICKLERS:]]
    print(
        f"\nTricklers: {TRICKLERS} slow-header clients cut after {min(header_cut):.2f}-{max(header_cut):.2f} s, "
        f"{TRICKLERS} slow-body clients after {min(body_cut):.2f}-{max(body_cut):.2f} s; "
        f"other clients answered in at most {max(waits) * 1000:.0f} ms"
    )
    assert control.startswith(b"HTTP/1.1 200"), control[:200]
    for data, _, _ in cut:
        assert data.startswith(b"HTTP/1.1 408"), data[:200]
        error = orjson.loads(data.split(b"\r\n\r\n", 1)[1])["error"]
        assert error["code"] == "request_timeout" and error["type"] == "invalid_request_error"
    assert max(header_cut) < HEADER_TIMEOUT + 1.5
    assert max(body_cut) < BODY_TIMEOUT + 1.5
    assert max(waits) < 2.0
