"""Why the gate refused a request: the admission test's steps replayed with their figures (``cause``),
and the inputs of the decision (``describe``), for ``bench.buffer.simulate`` and for logging a real run."""

from __future__ import annotations

from middleware.buffer.queue import Entry, Gate


def cause(g: Gate, cls: str, budget: float, now: float) -> str:
    """What the refusal hangs on, after ``Judge._late``'s steps: "idle slot" (a slot is free now, kept by
    another class's reservation), "reserve" (the replay with the slots other classes keep lent would start
    it in time), "late" (the replay starts it past its deadline), "stretch" (the replay stretched for the
    quicker classes that pass it does), "push" (the arrivals expected to pass it do), "margin" (the replay
    starts it in time, within the forecast's margin), or "passes" (it would make a waiter it passes late)."""
    e = Entry(cls, now, now + budget, g._seq + 1, now + budget)
    waiting = g._waiting()
    order = sorted([*waiting, e], key=lambda x: (x.key, x.seq))
    at, errors = order.index(e), list[float]()
    mine = g._starts(now, order, cls, errors)
    plain = g.forecast.starts(now, g._running, max(g.limit - g.in_flight, 0), order)
    assert mine is not None and plain is not None
    start, lent, slots, f = mine[at], plain[at], g.limit, g.forecast
    lane = None
    if lanes := g.reserve.slots(cls, g.limit):
        mine_ahead = [w for w in waiting[:at] if w.cls == cls]
        lane = f.lane_start(now, g._running, max(g.limit - g.in_flight, 0), cls, lanes, [*mine_ahead, e])
    stretched = start
    if (stretch := g._stretch(cls, now)) > 1.0:
        replayed = f.starts(now, g._running, g._free(cls, now), order)
        assert replayed is not None
        stretched = max(start, now + (replayed[at] - now) * stretch)
    kept = g.reserve.kept_from(cls, g.limit, now) if g.reserve.shares else None
    pushed = f.with_arrivals(now, stretched, cls, e.deadline, g.budgets, slots, kept)
    var = errors[at] ** 2 + f.push_variance(now, pushed, cls, e.deadline, g.budgets, slots, kept)
    if lane is not None:
        pushed = min(pushed, lane)
    margin = g.margin(e, float("inf") if g._overtaken(e, waiting[at:], now) else var**0.5)
    late = e.deadline - margin
    d = e.deadline
    figures = (f"start {start - d:+.3f}s, stretched {stretched - d:+.3f}s, pushed {pushed - d:+.3f}s,"
               f" lane {'-' if lane is None else f'{lane - d:+.3f}s'}, margin {margin:.3f}s,"
               f" lent {lent - d:+.3f}s")  # fmt: skip
    if g.limit > g.in_flight:
        return f"idle slot ({figures})"
    if min(start, lane or start) > late and lent <= late:
        return f"reserve ({figures})"
    if min(start, lane or start) > d:
        return f"late ({figures})"
    if min(start, lane or start) > late:
        return f"margin ({figures})"
    if min(stretched, lane or stretched) > late:
        return f"stretch ({figures})"
    if pushed > late:
        return f"push ({figures})"
    return f"passes ({figures})"


def describe(g: Gate, cls: str, budget: float, now: float) -> str:
    """A shed decision's inputs: the slots, running and waiting requests, the forecast, and ``cause``."""
    running = sorted((e.cls[0], round(now - e.started_at, 3)) for e in g._running)
    waiting = [(e.cls[0], round(e.deadline - now, 3)) for e in g._waiting()]
    held = g.reserve.held(cls, g.limit, now)
    spreads = {c: None if (s := g.forecast.spread(c)) is None else round(s, 3) for c in g.forecast.by_class}
    rates = {c: round(g.forecast.rate(c, now), 2) for c in g.budgets}
    means = {c: round(v, 3) for c, v in g.forecast.by_class.items()}
    return (
        f"{cls} at {now:.3f}s: free {g.limit - g.in_flight}, held from it {held}; running (class, s)"
        f" {running}; waiting (class, slack s) {waiting}; means {means}, spreads {spreads}, rates {rates};"
        f" {cause(g, cls, budget, now)}"
    )
