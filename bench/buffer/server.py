"""Fluido for the buffer benchmark: ``python -m bench.buffer.server --port P --config JSON``."""

from __future__ import annotations

import argparse

import orjson
import uvicorn

from proxy.app import create_app
from proxy.config import parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", required=True, help="the configuration as one JSON document")
    args = parser.parse_args()
    cfg = parse(orjson.loads(args.config))
    # The protocol `fluido serve` runs: it tells the app when a client leaves, so a request needs no task
    # watching for it (with uvicorn's own httptools protocol every stream would start one).
    uvicorn.run(create_app(cfg), host="127.0.0.1", port=args.port, loop="uvloop",
                http="proxy.http_protocol:HeaderDeadlineProtocol", log_level="warning",
                access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
