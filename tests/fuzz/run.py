"""``make fuzz``: the fuzz cases for minutes, against a running Fluido, with a table of what came back.

    FUZZ_SECONDS=300 python -m tests.fuzz.run          # starts the fakes and `fluido serve` itself
    FUZZ_URL=http://127.0.0.1:8080 FUZZ_ALIASES=chat python -m tests.fuzz.run   # a Fluido already running

Each round runs every route's cases under a new seed. Exit status 1 if any reply was a 5xx, malformed, a
broken stream or a hang, or if Fluido stopped answering /health.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from hypothesis import HealthCheck, given, seed, settings

from tests.fuzz.cases import Case
from tests.fuzz.oracle import FAILURES, VERDICTS, judge
from tests.fuzz.routes import FuzzRoute, routes
from tests.fuzz.target import ALIASES, fakes, fuzz_config, toml_config
from tests.fuzz.wire import HANG_SECONDS, send

REPO = Path(__file__).resolve().parents[2]
ROUND = 100  # cases per route per seed


@contextmanager
def served() -> Iterator[tuple[str, Callable[[], None]]]:
    """`fluido serve` on a free port, in front of the fakes, until the block ends."""
    from tests.conftest import free_port

    with fakes() as f, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "fuzz.toml"
        config.write_text(toml_config(fuzz_config(f.vllm.url, f.ollama.url)))
        port = free_port()
        command = [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--port", str(port)]
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(base + "/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("fluido serve did not come up")
                time.sleep(0.2)

            def forget() -> None:  # the fakes keep every request they get: a long run sends many
                for fake in (f.vllm, f.ollama):
                    fake.requests.clear()
                    fake.headers.clear()

            yield base, forget
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def fuzz(
    base: str, aliases: tuple[str, ...], seconds: float, between: Callable[[], None] = lambda: None
) -> int:
    counts: dict[str, Counter[str]] = {}
    failures: list[str] = []
    end = time.monotonic() + seconds
    with httpx.Client(base_url=base, timeout=HANG_SECONDS) as client:
        round_no = 0
        while time.monotonic() < end:
            for route in routes(aliases):
                tally = counts.setdefault(route.path, Counter())
                run_round(client, route, round_no, tally, failures, end)
            between()
            round_no += 1
        healthy = client.get("/health").status_code == 200
    print_table(counts)
    for failure in failures[:20]:
        print(failure)
    print(f"/health afterwards: {'200' if healthy else 'FAILED'}")
    failed = sum(c[v] for c in counts.values() for v in FAILURES)
    return 1 if failed or not healthy else 0


def run_round(
    client: httpx.Client,
    route: FuzzRoute,
    round_no: int,
    tally: Counter[str],
    failures: list[str],
    end: float,
) -> None:
    @seed(round_no)
    @settings(
        max_examples=ROUND, database=None, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )  # fmt: skip
    @given(route.cases())
    def one(case: Case) -> None:
        if time.monotonic() > end:
            return
        verdict, problem = judge(send(client, case), route.success, route.error, case.transport)
        tally["requests"] += 1
        tally[verdict] += 1
        tally[f"kind:{case.kind}"] += 1
        if verdict in FAILURES:
            failures.append(f"{verdict}: {problem}\n  {case!r}")

    one()


def print_table(counts: dict[str, Counter[str]]) -> None:
    columns = ("requests", *VERDICTS)
    print(f"{'route':<24}" + "".join(f"{c:>13}" for c in columns))
    for path, tally in counts.items():
        print(f"{path:<24}" + "".join(f"{tally[c]:>13}" for c in columns))
    total = sum((c for c in counts.values()), Counter())
    print(f"{'total':<24}" + "".join(f"{total[c]:>13}" for c in columns))
    kinds = sorted((k[5:], n) for k, n in total.items() if k.startswith("kind:"))
    print("cases by kind: " + ", ".join(f"{k} {n}" for k, n in kinds))


def main() -> int:
    seconds = float(os.environ.get("FUZZ_SECONDS", "300"))
    if url := os.environ.get("FUZZ_URL"):
        aliases = tuple((os.environ.get("FUZZ_ALIASES") or "chat").split(","))
        return fuzz(url, aliases, seconds)
    with served() as (base, forget):
        return fuzz(base, ALIASES, seconds, forget)


if __name__ == "__main__":
    sys.exit(main())
