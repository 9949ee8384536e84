"""Fluido as the benchmark runs it: one uvicorn worker (uvloop, httptools) in front of one upstream.

It is built the way ``fluido serve`` builds a worker: ``create_app`` on a parsed config, defaults for
everything but one OpenAI-compatible upstream, so that every request takes the ordinary routed path.
Run: ``python -m bench.fluido_server --port 9002 --upstream http://127.0.0.1:9000/v1 [--features core]``.

Features: ``core`` is the proxy alone (no access log, metrics, query classifier or response cache);
``observed`` adds the access log and the metrics; ``default`` is Fluido as shipped.
"""

from __future__ import annotations

import argparse

import uvicorn

from proxy.app import create_app
from proxy.config import parse

ALIAS = "default"
FEATURES = {
    "core": {
        "log": {"access_log": False},
        "metrics": {"enabled": False},
        "classifier": {"enabled": False},
        "cache": {"enabled": False},
    },
    "observed": {"classifier": {"enabled": False}, "cache": {"enabled": False}},
    "default": {},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's /v1 base URL")
    parser.add_argument("--features", choices=FEATURES, default="default")
    parser.add_argument("--cache-redis", help="keep the response cache in this Redis (default: in memory)")
    args = parser.parse_args()
    data = {
        "upstreams": {"up": {"kind": "openai", "url": args.upstream}},
        "models": {ALIAS: {"targets": [{"upstream": "up", "model": "bench-model"}]}},
        **FEATURES[args.features],
    }
    if args.cache_redis:
        data |= {"cache": {"backend": "redis"}, "redis": {"url": args.cache_redis}}
    cfg = parse(data)
    uvicorn.run(create_app(cfg), host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
