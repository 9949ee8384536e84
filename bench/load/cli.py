"""fluido bench: load-test and compare OpenAI-compatible chat endpoints.

fluido bench --url http://127.0.0.1:8080 --rate 0.5,1,2,4 --duration 60 --out results/
fluido bench --url http://127.0.0.1:8000/v1 --compare fluido=http://127.0.0.1:8080 --concurrency 1,4,16
fluido bench --url http://127.0.0.1:11434 --model llama3.2:1b,qwen2.5:0.5b --sweep 6
fluido bench --plot results/          # redraw the plots and report.md from results/results.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from rich.console import Console

from . import plots, report, results
from .plan import run_levels, run_sweep
from .progress import LiveProgress
from .prompts import DEFAULT_MIX, builtin_prompts, file_prompts, parse_mix
from .runner import Cell, Endpoint, Runner, Settings, normalise_base
from .schedule import Load, parse_numbers

KEY_VARIABLES = ("FLUIDO_BENCH_API_KEY", "OPENAI_API_KEY")
_BUILTIN_PROMPTS = 4096  # a seeded sequence long enough that no cell repeats it


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fluido bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", help="the server's root or its /v1 base (OpenAI-compatible)")
    p.add_argument("--name", help="its name in reports (default: host:port)")
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="run the same schedule against this endpoint too, interleaved; repeatable",
    )
    p.add_argument("--model", help="model name(s), comma-separated (default: the first of /v1/models)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--rate", help="open loop: Poisson arrivals at these rates (requests/s), e.g. 0.5,1,2")
    shape.add_argument("--concurrency", help="closed loop: this many requests in flight, e.g. 1,4,16")
    shape.add_argument(
        "--sweep",
        type=int,
        nargs="?",
        const=6,
        metavar="N",
        help="find the synchronous and saturation rates, then run N rates between them",
    )
    p.add_argument(
        "--burstiness", type=float, default=1.0, help="gamma shape of the gaps: 1 = Poisson, <1 burstier"
    )
    p.add_argument(
        "--sweep-concurrency", type=int, default=32, help="requests in flight in the sweep's throughput probe"
    )
    p.add_argument("--duration", type=float, help="seconds per load level (default 30 unless --requests)")
    p.add_argument("--requests", type=int, help="requests per load level")
    p.add_argument(
        "--drain", type=float, default=30.0, help="seconds to wait for requests still running at the end"
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds before one request is given up")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between load levels")
    p.add_argument(
        "--mix", default=DEFAULT_MIX, help=f"built-in query classes and their shares (default {DEFAULT_MIX})"
    )
    p.add_argument(
        "--prompts", type=Path, help="JSONL of OpenAI chat bodies to send instead of the built-in mix"
    )
    p.add_argument("--no-stream", action="store_true", help="ask for whole answers (TTFT = whole answer)")
    p.add_argument("--no-usage", action="store_true", help="do not ask for stream_options.include_usage")
    p.add_argument("--seed", type=int, default=0, help="seed of the arrivals and of the prompt mix")
    p.add_argument("--out", type=Path, help="write results.json, report.md and PNG plots here")
    p.add_argument(
        "--plot", type=Path, metavar="DIR", help="only redraw the plots and report.md of DIR/results.json"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _endpoints(args: argparse.Namespace) -> list[Endpoint]:
    base = normalise_base(args.url)
    endpoints = [Endpoint(args.name or base.split("//", 1)[1].removesuffix("/v1"), base)]
    for item in args.compare:
        name, sep, url = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--compare takes NAME=URL, got {item!r}")
        endpoints.append(Endpoint(name, normalise_base(url)))
    if len({e.name for e in endpoints}) != len(endpoints):
        raise ValueError("endpoint names must differ (use --name)")
    return endpoints


def _loads(args: argparse.Namespace) -> list[Load]:
    if args.rate:
        return [Load("rate", r) for r in parse_numbers(args.rate)]
    if args.concurrency:
        return [Load("concurrency", int(c)) for c in parse_numbers(args.concurrency)]
    return [] if args.sweep else [Load("concurrency", 1)]


async def _first_model(endpoint: Endpoint, headers: dict[str, str]) -> str:
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(endpoint.base + "/models") as resp,
    ):
        data = (await resp.json(content_type=None)).get("data") or []
        if resp.status != 200 or not data:
            raise ValueError(f"{endpoint.base}/models lists no model: pass --model")
        return str(data[0]["id"])


async def _run(args: argparse.Namespace, argv: list[str], console: Console) -> results.Results:
    key = next((os.environ[v] for v in KEY_VARIABLES if os.environ.get(v)), None)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    endpoints = _endpoints(args)
    models = [m.strip() for m in args.model.split(",") if m.strip()] if args.model else []
    models = models or [await _first_model(endpoints[0], headers)]
    duration = args.duration if args.duration is not None or args.requests else 30.0
    settings = Settings(
        duration,
        args.requests,
        args.drain,
        args.timeout,
        args.seed,
        args.burstiness,
        not args.no_stream,
        not args.no_usage,
    )
    mix = parse_mix(args.mix)
    prompts = (
        file_prompts(args.prompts) if args.prompts else builtin_prompts(mix, _BUILTIN_PROMPTS, args.seed)
    )
    progress = LiveProgress(console, enabled=not args.quiet)
    runner = Runner(settings, prompts, headers, on_record=progress.record)

    async def run_cell(endpoint: Endpoint, model: str, load: Load) -> Cell:
        with progress.cell(f"{endpoint.name} {model} {load.name}", runner.planned_requests(load)):
            return await runner.run(endpoint, model, load)

    cells: list[Cell] = []
    with progress:
        for model in models:
            if args.sweep:
                cells += await run_sweep(
                    run_cell, endpoints, model, args.sweep, args.sweep_concurrency, args.pause
                )
            else:
                cells += await run_levels(run_cell, endpoints, model, _loads(args), args.pause)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["command"] = "fluido bench " + shlex.join(argv)
    config["settings"] = {
        "duration": duration,
        "models": models,
        "endpoints": {e.name: e.base for e in endpoints},
    }
    return results.Results(config, [e.name for e in endpoints], cells)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:  # a log or a pipe: no need to squeeze the table into 80 columns
        console = Console(width=200)
    if args.plot:  # redraw from results.json alone: the plots, report.md and the table
        done = results.read(args.plot)
        out = args.plot if args.plot.is_dir() else args.plot.parent
        report.print_table(done, console)
        _write_outputs(done, out, console, with_results=False)
        return 0
    if not args.url:
        parser().error("--url is required (or --plot DIR)")
    try:
        done = asyncio.run(_run(args, argv, Console(stderr=True)))
    except (ValueError, RuntimeError, OSError, aiohttp.ClientError) as exc:
        print(f"fluido bench: {exc}", file=sys.stderr)
        return 2
    report.print_table(done, console)
    if args.out:
        _write_outputs(done, args.out, console, with_results=True)
    return 0


def _write_outputs(done: results.Results, out: Path, console: Console, with_results: bool) -> None:
    drawn = plots.draw_all(done, out)
    written = [results.write(done, out)] if with_results else []
    written += [*drawn, report.write_markdown(done, out, drawn)]
    for path in written:
        console.print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
