"""``python -m tests.fakes.capacity``: the fixed-capacity fake as its own process."""

from __future__ import annotations

import argparse
import asyncio
import signal

from .capacity import MODES, FakeCapacity


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeCapacity(
        args.slots,
        mode=args.mode,
        models=args.model,
        prefill_base_s=args.prefill_ms / 1000,
        prefill_per_token_s=args.prefill_ms_per_token / 1000,
        itl_s=args.itl_ms / 1000,
        output_tokens=args.output_tokens,
        max_queue=args.max_queue,
    )
    fake.load_factor = args.load_factor
    url = await fake.start(port=args.port, host=args.host)
    print(f"capacity fake ({args.mode}, {args.slots} slots) on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.capacity", description="A model server with a fixed number of slots."
    )
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--mode", choices=MODES, default="vllm")
    parser.add_argument("--model", action="append", help="served model name (repeatable)")
    parser.add_argument("--prefill-ms", type=float, default=20.0, help="prefill time of any request")
    parser.add_argument(
        "--prefill-ms-per-token", type=float, default=0.2, help="prefill time per prompt word"
    )
    parser.add_argument("--itl-ms", type=float, default=5.0, help="time between streamed tokens")
    parser.add_argument("--output-tokens", type=int, default=16, help="tokens when max_tokens is not set")
    parser.add_argument("--max-queue", type=int, help="waiting requests beyond it get 503")
    parser.add_argument("--load-factor", type=float, default=1.0, help="ITL multiplier with every slot busy")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency everywhere but Windows
        asyncio.run(_serve(args))
    else:
        uvloop.run(_serve(args))
