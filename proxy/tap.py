"""Watching a stream without wrapping it: what middleware registers when it only needs to see a stream's
chunks go by and to know how it ended.

Each async generator a chunk passes through costs a resumption per chunk and per wait, so middleware
that only observes (the rate limit counting what was generated, the cache recording the reply, the
buffer holding its slot) does not wrap the stream in a generator of its own: it registers callbacks on
one ``Tapped`` stream instead, and whoever relays the stream calls them all from its one loop.

``on_chunk(chunk)`` sees every chunk, in order, as it leaves; ``on_end(finished)`` is awaited once,
however the stream ends: ``finished`` is True only when the source ran to its end (an error, a
cancellation or the consumer closing it early give False). The callbacks run in the order they were
registered, so the innermost middleware's first, as the ``finally`` blocks of nested generators would;
every ``on_end`` runs even if an earlier one failed (the later ones are then told False), and the first
failure is raised after them.

A ``Tapped`` stream is an async generator to anyone who iterates it (``async for``, ``anext``,
``aclose``); a relay loop that knows it (``proxy.door``) reads ``source`` itself and calls ``chunk_taps``
and ``end``, so a chunk crosses no layer at all on its way.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from proxy.types import Chunk, Stream

OnChunk = Callable[[Chunk], None]
OnEnd = Callable[[bool], Awaitable[None]]


class Tapped(AsyncGenerator[Chunk, None]):
    """``source`` with observers; see the module's docstring."""

    __slots__ = ("_ended", "chunk_taps", "end_taps", "source")

    def __init__(self, source: Stream) -> None:
        self.source = source
        self.chunk_taps: list[OnChunk] = []
        self.end_taps: list[OnEnd] = []
        self._ended = False

    async def end(self, finished: bool) -> None:
        """Await every ``on_end`` once (a second call does nothing); raise the first failure after all."""
        if self._ended:
            return
        self._ended = True
        failure: BaseException | None = None
        for on_end in self.end_taps:
            try:
                await on_end(finished and failure is None)
            except BaseException as exc:
                if failure is None:
                    failure = exc
        if failure is not None:
            raise failure

    def __aiter__(self) -> Tapped:
        return self

    async def __anext__(self) -> Chunk:
        try:
            chunk = await anext(self.source)
        except StopAsyncIteration:
            await self.end(True)
            raise
        except BaseException:
            await self.end(False)
            raise
        for on_chunk in self.chunk_taps:
            on_chunk(chunk)
        return chunk

    async def asend(self, value: None) -> Chunk:
        return await self.__anext__()

    async def athrow(self, *args: Any) -> Chunk:
        try:
            chunk = await self.source.athrow(*args)
        except BaseException:
            await self.end(False)
            raise
        for on_chunk in self.chunk_taps:
            on_chunk(chunk)
        return chunk

    async def aclose(self) -> None:
        """Close the source, then end (not finished, unless it had already ended)."""
        try:
            await self.source.aclose()
        finally:
            await self.end(False)


def tap(stream: Stream, on_chunk: OnChunk | None = None, on_end: OnEnd | None = None) -> Stream:
    """``stream`` with these observers added: the same ``Tapped`` stream if it is one already, so a chunk
    meets every observer in one place, however many middleware watch it."""
    tapped = stream if type(stream) is Tapped else Tapped(stream)
    if on_chunk is not None:
        tapped.chunk_taps.append(on_chunk)
    if on_end is not None:
        tapped.end_taps.append(on_end)
    return tapped
