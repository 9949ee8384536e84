"""A request's place in an admission queue (``Entry``), and a refusal (``Shed``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter

QUEUED, STARTED, DONE, CANCELLED, EXPIRED = "queued", "started", "done", "cancelled", "expired"
ORDER = attrgetter("key", "seq")  # the queue's order, as a sort key (Entry.__lt__ compares the same)


@dataclass(slots=True, eq=False)
class Entry:
    """One request's place: waiting, running, or gone. ``waiter`` belongs to the async layer."""

    cls: str
    arrival: float
    deadline: float
    seq: int
    key: float = 0.0  # the queue's order: the deadline (EDF), or the arrival (first come, first served)
    state: str = QUEUED
    started_at: float = 0.0
    epoch: int = 0
    launch: float = 0.0  # seconds of its slot spent waiting for the upstream to start: not service time
    waiter: object = field(default=None, repr=False)
    lease: object = field(default=None, repr=False)  # the replicas' shared count's, when there is one

    def __lt__(self, other: Entry) -> bool:
        return (self.key, self.seq) < (other.key, other.seq)


@dataclass(frozen=True, slots=True)
class Shed:
    """A refusal: ``reason`` is queue_full, deadline_unreachable, expired or upstream_unavailable."""

    reason: str
    retry_after: float
