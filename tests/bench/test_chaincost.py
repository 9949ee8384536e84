"""bench.chaincost: each variant is the whole app, answering every request, measured round by round."""

from __future__ import annotations

from bench.chaincost import build, measure, one


async def test_each_variant_answers_and_gets_a_figure_per_round() -> None:
    cpu = await measure(["routing", "full", "full-buffer"], rounds=2, per_round=5)
    assert list(cpu) == ["routing", "full", "full-buffer"]
    assert all(len(values) == 2 and all(v > 0 for v in values) for values in cpu.values())


async def test_the_full_chain_runs_its_parts_and_the_upstream_is_never_called() -> None:
    app, key = build("full")
    async with app.router.lifespan_context(app):
        assert await one(app, key) == 200  # only the instant adapter can answer: the upstream's port refuses
        assert await one(app, "") == 401  # the key is checked: the chain is on
    routing, no_key = build("routing")
    assert no_key == ""
    async with routing.router.lifespan_context(routing):
        assert await one(routing, no_key) == 200
