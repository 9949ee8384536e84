"""Fluido as the benchmark runs it: one uvicorn worker (uvloop, httptools) in front of one upstream.

It is set up the way ``fluido serve`` sets up a worker (logging configured from the config), with a
single OpenAI-compatible upstream so that every request takes the ordinary routed path.
Run: ``python -m bench.fluido_server --port 9002 --upstream http://127.0.0.1:9000/v1``.
"""

from __future__ import annotations

import argparse

import uvicorn

from proxy.app import create_app
from proxy.config import parse
from proxy.logs import configure_logging

ALIAS = "default"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's /v1 base URL")
    args = parser.parse_args()
    cfg = parse(
        {
            "upstreams": {"up": {"kind": "openai", "url": args.upstream}},
            "models": {ALIAS: {"targets": [{"upstream": "up", "model": "bench-model"}]}},
        }
    )
    configure_logging(cfg.log)
    uvicorn.run(create_app(cfg), host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
