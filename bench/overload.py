"""Overload: the fixed-capacity fake, direct and through Fluido, at multiples of its capacity.

It starts the fake (``tests.fakes.capacity``) and ``fluido serve`` in front of it (response cache off: the
built-in prompts repeat, and cache hits would skip the upstream), works out the fake's capacity from its
timings and the prompt mix, and runs ``fluido bench --compare`` at the given multiples of it. Figures
only; it never fails on a time.

Run: ``python -m bench.overload [--slots 4] [--loads 0.5,1,2,4] [--duration 20] [--out results/]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from bench.load.cli import main as bench
from bench.load.prompts import builtin_prompts, parse_mix
from bench.procs import REPO, Child, Fleet, free_port

MODEL = "capacity-model"


def capacity(slots: int, prefill_ms: float, per_word_ms: float, itl_ms: float, mix: str, seed: int) -> float:
    """Requests/s the fake serves at most: slots over the mean service time of the prompts sent."""
    prompts = builtin_prompts(parse_mix(mix), 4096, seed)
    service_ms: list[float] = [
        prefill_ms
        + per_word_ms * len(p.body["messages"][0]["content"].split())
        + itl_ms * (p.body["max_tokens"] - 1)
        for p in prompts
    ]
    return slots / (sum(service_ms) / len(service_ms) / 1000)


def _config(fake_port: int) -> str:
    return (
        "[cache]\nenabled = false\n"
        f'[upstreams.fake]\nkind = "openai"\nurl = "http://127.0.0.1:{fake_port}/v1"\n'
        f'[models.{MODEL}]\ntargets = [{{ upstream = "fake", model = "{MODEL}" }}]\n'
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--prefill-ms", type=float, default=20.0)
    p.add_argument("--prefill-ms-per-token", type=float, default=0.2)
    p.add_argument("--itl-ms", type=float, default=10.0)
    p.add_argument("--mix", default="short=70,long=30")
    p.add_argument("--loads", default="0.5,1,2,4", help="multiples of the fake's capacity")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--drain", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="where fluido bench writes results.json, report.md and the plots")
    args = p.parse_args(argv)
    cap = capacity(args.slots, args.prefill_ms, args.prefill_ms_per_token, args.itl_ms, args.mix, args.seed)
    rates = [round(float(m) * cap, 2) for m in args.loads.split(",")]
    print(
        f"fake: {args.slots} slots, capacity {cap:.2f} req/s with mix {args.mix}; rates {rates}", flush=True
    )
    fake_args = [
        "--slots", str(args.slots), "--prefill-ms", str(args.prefill_ms), "--itl-ms", str(args.itl_ms),
        "--prefill-ms-per-token", str(args.prefill_ms_per_token), "--model", MODEL,
    ]  # fmt: skip
    with Fleet() as fleet:
        fake = fleet.start("fake", "tests.fakes.capacity", fake_args, cpu=None)
        fleet.wait_listening(fake)
        config = fleet.logs / "fluido.toml"
        config.write_text(_config(fake.port))
        port, log = free_port(), fleet.logs / "fluido.log"
        with log.open(
            "wb"
        ) as out:  # `fluido serve` takes --port after its subcommand: not Fleet.start's shape
            command = [
                sys.executable,
                "-m",
                "proxy.cli",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
            ]
            proc = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        fluido = Child("fluido", proc, port, log)
        fleet.children.append(fluido)
        fleet.wait_listening(fluido)
        command_args = [
            "--url", f"http://127.0.0.1:{fake.port}", "--name", "direct",
            "--compare", f"fluido=http://127.0.0.1:{port}", "--model", MODEL, "--mix", args.mix,
            "--rate", ",".join(str(r) for r in rates), "--duration", str(args.duration),
            "--drain", str(args.drain), "--seed", str(args.seed),
        ]  # fmt: skip
        return bench([*command_args, *(["--out", args.out] if args.out else [])])


if __name__ == "__main__":
    sys.exit(main())
