"""Builds the buffer from the configuration: one gate per upstream, seeded from what each one is."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from middleware.buffer.admission import Admission, SharedCount
from middleware.buffer.config import BufferConfig
from middleware.buffer.controller import Controller, ControllerSettings
from middleware.buffer.link import Buffer
from middleware.buffer.queue import Gate
from middleware.buffer.signals import Signals
from proxy.config_upstreams import ModelConfig, UpstreamConfig
from proxy.types import Target
from proxy.upstream.breaker import CircuitBreaker

if TYPE_CHECKING:  # proxy.observe imports proxy.config, which imports this package: a type only here
    from proxy.observe import Metrics
    from proxy.observe.metrics import BufferGauges


def settings_for(cfg: BufferConfig, up: UpstreamConfig) -> ControllerSettings:
    """Where L starts and how far it may go, from what the upstream is."""
    own = cfg.upstream(up.name)
    maximum = own.max_limit or cfg.max_limit
    if up.embedded is not None:
        # llama-cpp-python's server runs one request at a time; it is launched so that a second request
        # never interrupts the first, and the buffer keeps the second one waiting here.
        return ControllerSettings(initial=1, minimum=1, maximum=1, adaptive=False)
    if own.parallel and not own.adaptive:
        return ControllerSettings(initial=own.parallel, maximum=own.parallel, adaptive=False)
    # Ollama does not report its slots: start from the configured parallel (its own default is 1) and learn.
    initial = own.parallel or (1 if up.kind == "ollama" else cfg.openai_initial)
    return ControllerSettings(
        initial=min(initial, maximum), maximum=maximum, tolerance=cfg.tolerance, adaptive=own.adaptive
    )


@dataclass(slots=True)
class BufferParts:
    """The buffer and what the app's lifespan runs and stops for it."""

    buffer: Buffer
    admissions: dict[str, Admission]
    signals: list[Signals] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self.tasks = [asyncio.get_running_loop().create_task(s.run()) for s in self.signals]
        for admission in self.admissions.values():
            admission.on_change(admission)  # the gauges show L from the start

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for admission in self.admissions.values():
            await admission.close()


def build_buffer(
    cfg: BufferConfig,
    upstreams: Mapping[str, UpstreamConfig],
    models: Mapping[str, ModelConfig],
    breakers: Mapping[str, CircuitBreaker],
    metrics: Metrics | None,
    shared: SharedCount | None,
) -> BufferParts:
    admissions: dict[str, Admission] = {}
    signals: list[Signals] = []
    for name, up in upstreams.items():
        controller = Controller(settings_for(cfg, up))
        fifo = cfg.order == "fifo"
        reserve = {} if fifo else cfg.reserve  # first come, first served knows no classes
        gate = Gate(controller, cfg.queue_bound, reserve, fifo=fifo, shared=shared is not None)
        report = _reporter(metrics.buffer_gauges(name)) if metrics is not None else _unreported
        admission = Admission(name, gate, shared, cfg.shared_poll_seconds, on_change=report)
        admissions[name] = admission
        if up.kind == "openai" and up.embedded is None and controller.settings.adaptive:
            signals.append(Signals(up.url, cfg.poll_seconds, *_callbacks(admission)))

    def targets(alias: str) -> tuple[Target, ...] | None:
        model = models.get(alias)
        return model.targets if model is not None else None

    buffer = Buffer(
        cfg,
        targets,
        breakers,
        {name: up.breaker_cooldown for name, up in upstreams.items()},
        admissions,
        observe_wait=metrics.buffer_wait if metrics is not None else lambda upstream, seconds: None,
        observe_shed=metrics.buffer_refused if metrics is not None else lambda upstream, reason: None,
        observe_event=metrics.stream_event if metrics is not None else lambda deltas, held: None,
    )
    return BufferParts(buffer, admissions, signals)


def _reporter(gauges: BufferGauges) -> Callable[[Admission], None]:
    def report(admission: Admission) -> None:
        gate = admission.gate
        gauges.set(gate.controller.limit, gate.in_flight, gate.depth)

    return report


def _unreported(admission: Admission) -> None:
    pass


def _callbacks(admission: Admission) -> tuple[Callable[[int], None], Callable[[int | None], None]]:
    controller = admission.gate.controller

    def on_slots(slots: int) -> None:
        controller.reseed(slots)
        admission.changed()

    def on_queue(waiting: int | None) -> None:
        controller.upstream_queue = waiting

    return on_slots, on_queue
