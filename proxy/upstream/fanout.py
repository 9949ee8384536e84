"""``n`` > 1 for upstreams that return one choice per request: n generations at once, one choice each.

Ollama and llama-cpp-python's server ignore ``n`` (or refuse it); vLLM honours it and is configured with
``n_choices = "native"``. Either way the client gets exactly n choices, indexed 0..n-1, or an error: never
fewer without a word. Choice i of the reply is generation i; for a stream, each generation's chunks are
re-indexed and merged in arrival order, and their usage is added up into one usage chunk at the end.
Usage follows OpenAI's convention for n: the prompt counted once, the completions of every choice added.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Sequence
from contextlib import aclosing
from typing import TypeVar

from proxy.errors import UpstreamError
from proxy.types import Choice, Chunk, Completion, Stream, Usage

T = TypeVar("T")
_QUEUE_SIZE = 64  # chunks waiting for the client, across all generations: bounded, so memory is too


class TooFewChoices(UpstreamError):
    """The upstream returned fewer choices than ``n``: a capability it lacks, not an outage."""

    fault = False


async def all_of(work: Sequence[Awaitable[T]]) -> list[T]:
    """Await every one concurrently; the first failure cancels the rest and is raised as itself."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def merge_completions(completions: Sequence[Completion]) -> Completion:
    choices = tuple(
        Choice(i, c.choices[0].message, c.choices[0].finish_reason, c.choices[0].logprobs)
        for i, c in enumerate(completions)
    )
    usage = _sum_usage([c.usage for c in completions])
    return Completion(choices=choices, usage=usage, meta=completions[0].meta)


def _sum_usage(usages: Sequence[Usage | None]) -> Usage | None:
    if any(u is None for u in usages) or not usages:
        return None
    known = [u for u in usages if u is not None]
    return Usage(known[0].prompt_tokens, sum(u.completion_tokens for u in known))


async def merge_streams(streams: Sequence[Stream]) -> Stream:
    """One stream of every generation's chunks, choice i re-indexed to i, usage added up at the end."""
    queue: asyncio.Queue[tuple[int, Chunk | BaseException | None]] = asyncio.Queue(_QUEUE_SIZE)

    async def pump(i: int, stream: Stream) -> None:
        try:
            async with aclosing(stream):
                async for chunk in stream:
                    await queue.put((i, chunk))
        except Exception as exc:
            await queue.put((i, exc))
        else:
            await queue.put((i, None))

    pumps = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    usages: list[Usage | None] = [None] * len(streams)
    try:
        running = len(pumps)
        while running:
            i, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                if item.usage is not None:
                    usages[i] = item.usage
                    if not item.carries_output:
                        continue
                    item = dataclasses.replace(item, usage=None)
                yield dataclasses.replace(item, index=i)
        if (usage := _sum_usage(usages)) is not None:
            yield Chunk(usage=usage)
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


def check_choices(completion: Completion, n: int, upstream: str) -> Completion:
    if len(completion.choices) != n:
        raise TooFewChoices(f"Upstream '{upstream}' returned {len(completion.choices)} choices for n={n}.")
    return completion


async def checked_stream(stream: Stream, n: int, upstream: str) -> Stream:
    """Pass a native n-choice stream through; at its end, every index 0..n-1 must have finished."""
    finished: set[int] = set()
    async with aclosing(stream):
        async for chunk in stream:
            if chunk.finish_reason is not None:
                finished.add(chunk.index)
            yield chunk
    if finished != set(range(n)):
        raise TooFewChoices(f"Upstream '{upstream}' finished {len(finished)} choices for n={n}.")
