"""Where the full chain spends its CPU: py-spy samples Fluido under load, non-stream and stream apart.
``python -m bench.profile [--seconds 10] [--out DIR]``; needs ``py-spy`` (``pip install py-spy``).

Fluido (``bench.fluido_server --features full``) runs pinned to one core in front of the zero-delay
upstream; the load is 16 connections of unique deterministic prompts (every one a cache miss). For each
mode it prints the top functions by own time and by time including callees, as shares of the samples,
and keeps py-spy's raw collapsed stacks (and a speedscope file) in ``--out`` for a closer look.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import uvloop

from bench.fluido_server import ALIAS, BENCH_KEY
from bench.loadgen import chat_request, connect, run_load
from bench.overhead import first_answer, pin_cores
from bench.procs import Fleet

_LINE = re.compile(r" \(([^)]*?):\d+\)$")  # "name (path:line)" -> drop the line, keep the file


def frame_name(frame: str) -> str:
    """``"send (uvicorn/protocols/http/httptools_impl.py:123)"`` -> ``"send (httptools_impl.py)"``."""
    match = _LINE.search(frame)
    if match is None:
        return frame
    return f"{frame[: match.start()]} ({Path(match.group(1)).name})"


def top(raw: Path, n: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, top by own time, top by inclusive time) from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [frame_name(f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for name in set(frames[1:]):  # the first frame is the process/thread line
            inclusive[name] += int(count)
    return total, own.most_common(n), inclusive.most_common(n)


async def load(port: int, stream: bool, seconds: float) -> int:
    conns = await connect(port, 16)
    try:
        raw = chat_request(ALIAS, stream, key=BENCH_KEY, unique=True)
        samples = await run_load(port, conns, raw, stream, 10**9, seconds)
    finally:
        for conn in conns:
            conn.close()
    return len(samples.latency)


def profile(pid: int, port: int, mode: str, seconds: float, out: Path, n: int) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raw, speedscope = out / f"{mode}.txt", out / f"{mode}.speedscope.json"
    uvloop.run(load(port, mode == "stream", 2.0))  # warm
    # --gil: only samples holding the GIL, i.e. Python work; waiting (for the loop, a lock) is not CPU.
    base = [spy, "record", "--pid", str(pid), "--rate", "400", "--nonblocking", "--gil"]
    recorders = [
        subprocess.Popen(
            [*base, "--duration", str(int(seconds)), "--format", fmt, "--output", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fmt, path in (("raw", raw), ("speedscope", speedscope))
    ]
    done = uvloop.run(load(port, mode == "stream", seconds))
    for recorder in recorders:
        recorder.wait(timeout=seconds + 30)
    total, own, inclusive = top(raw, n)
    print(f"\n{mode}: {done} requests in {seconds:g} s, {total} samples (raw stacks: {raw})")
    print(f"  {'own time':<62}{'share':>7}    {'with callees':<62}{'share':>7}")
    for (name_a, a), (name_b, b) in zip(own, inclusive, strict=False):
        print(f"  {name_a[:60]:<62}{a / total:>7.1%}    {name_b[:60]:<62}{b / total:>7.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="load and sampling time per mode")
    parser.add_argument("--out", type=Path, help="where py-spy's files go (default: a temporary directory)")
    parser.add_argument("--top", type=int, default=25, help="how many functions to list")
    parser.add_argument("--features", default="full", choices=("routing", "full"))
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="fluido-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    proxy_core, load_core, _ = pin_cores()
    with Fleet() as fleet:
        upstream = fleet.start("upstream", "bench.upstream", [], load_core)
        fleet.wait_listening(upstream)
        base = f"http://127.0.0.1:{upstream.port}/v1"
        fluido = fleet.start(
            "fluido", "bench.fluido_server", ["--upstream", base, "--features", args.features], proxy_core
        )
        key = BENCH_KEY if args.features == "full" else ""
        first_answer(fluido.port, ALIAS, key)
        for mode in ("json", "stream"):
            profile(fluido.pid, fluido.port, mode, args.seconds, out, args.top)


if __name__ == "__main__":
    main()
