"""A stream's next chunk, with something to do first if the stream has to wait for it.

Every write to a client is a system call. A route that relays a stream writes what it holds only when the
stream would make it wait: chunks already at hand (several upstream events that came in one read, a reply
from the cache) leave in one write, and nothing that is ready waits for a chunk that is not.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from proxy.types import Chunk, Stream


@types.coroutine
def next_chunk(stream: Stream, before_wait: Callable[[], Awaitable[None]]) -> Generator[Any, Any, Chunk]:
    """``await anext(stream)``, except that if the stream has to wait for its next chunk (for the upstream,
    a timer, another task), ``before_wait()`` is awaited first, while it waits.

    The stream is stepped by hand until it first waits; from there on this delegates to it as ``await``
    would: what the task sends or throws (a cancellation) goes to the stream, and a failure of
    ``before_wait`` is thrown into the stream where it waits, so it unwinds as it would if cancelled there.
    """
    step = stream.__anext__()
    try:
        signal = step.send(None)
    except StopIteration as done:  # the chunk was at hand; StopAsyncIteration and errors pass through
        return done.value  # type: ignore[no-any-return]
    return (yield from after_wait(step, signal, before_wait))


@types.coroutine
def after_wait(
    step: Coroutine[Any, Any, Chunk], signal: Any, before_wait: Callable[[], Awaitable[None]]
) -> Generator[Any, Any, Chunk]:
    """The rest of ``next_chunk`` once ``step`` (a stream's ``__anext__()``, sent ``None`` once) has had
    to wait, yielding ``signal``. A relay loop that steps its stream itself (``proxy.door``) calls this
    only when it must wait: a chunk at hand then costs no generator of this module's."""
    failure: BaseException | None = None
    try:
        yield from before_wait().__await__()
    except BaseException as exc:
        failure = exc
    while True:
        try:
            if failure is None:
                try:
                    value = yield signal
                except GeneratorExit:
                    step.close()
                    raise
                except BaseException as exc:
                    failure = exc
                    continue
                signal = step.send(value)
            else:
                thrown, failure = failure, None
                signal = step.throw(thrown)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
