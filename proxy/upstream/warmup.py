"""Start-up work done in the background, so the first user does not pay for it and start-up never waits.

- Every Ollama target is preloaded with an empty request carrying its ``keep_alive``.
- An embedded server is launched early only when the targets ahead of it in an alias are all down: with
  Ollama running, the child is never started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import structlog

from proxy.config_upstreams import ModelConfig
from proxy.errors import UpstreamError
from proxy.types import Target
from proxy.upstream.router import Upstream

log = structlog.get_logger("fluido.warmup")


@runtime_checkable
class Preloadable(Protocol):
    """An adapter that can load a model ahead of the first request."""

    async def preload(self, target: Target) -> None: ...


async def _alive(up: Upstream) -> bool:
    if up.launcher is not None:
        return up.launcher.running
    try:
        async with asyncio.timeout(up.cfg.connect_timeout + 1):
            return await up.adapter.health()
    except (UpstreamError, TimeoutError):
        return False


async def _preload(up: Upstream, target: Target) -> None:
    adapter = up.adapter
    if not isinstance(adapter, Preloadable):
        return
    try:
        await adapter.preload(target)
        log.info("model_preloaded", upstream=up.cfg.name, model=target.model)
    except UpstreamError as exc:
        log.warning("model_preload_failed", upstream=up.cfg.name, model=target.model, error=exc.message)


async def _launch_if_needed(targets: tuple[Target, ...], upstreams: Mapping[str, Upstream]) -> None:
    for target in targets:
        up = upstreams[target.upstream]
        if up.launcher is not None:
            try:
                await up.launcher.ensure_running()
            except UpstreamError as exc:
                log.error("embedded_start_failed", upstream=up.cfg.name, error=exc.message)
            return
        if await _alive(up):
            return


async def warm_up(models: Mapping[str, ModelConfig], upstreams: Mapping[str, Upstream]) -> None:
    jobs = [_launch_if_needed(m.targets, upstreams) for m in models.values()]
    seen: set[tuple[str, str]] = set()
    for model in models.values():
        for target in model.targets:
            up = upstreams[target.upstream]
            if isinstance(up.adapter, Preloadable) and (target.upstream, target.model) not in seen:
                seen.add((target.upstream, target.model))
                jobs.append(_preload(up, target))
    await asyncio.gather(*jobs)
    # Which embedded servers run now tells an operator whether start-up found the upstreams ahead serving.
    launched = sorted(
        name for name, up in upstreams.items() if up.launcher is not None and up.launcher.running
    )
    log.info("warmup_finished", embedded_running=launched)
