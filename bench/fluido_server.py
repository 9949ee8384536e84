"""Fluido as the benchmark runs it: one uvicorn worker (uvloop, httptools) in front of one upstream.

It is built and served the way ``fluido serve`` runs a worker: ``create_app`` on a parsed config, with one
OpenAI-compatible upstream in place of the configured ones, so that every request takes the ordinary
routed path. Run: ``python -m bench.fluido_server --port 9002 --upstream http://127.0.0.1:9000/v1
[--features routing|full|default]``.

Features:
- ``routing``: the proxy alone (no API key, limits, access log, metrics, query classifier, cache or
  adaptive buffer);
- ``full``: the chain of the repository's ``config.toml`` (access log, metrics, query classifier and
  compaction, response cache in memory, adaptive buffer) plus an API key (``BENCH_KEY``) with limits too
  high to refuse anything. The semantic cache is off unless ``--semantic``: it loads the embedding model;
- ``default``: the built-in defaults, no ``config.toml`` (what ``bench.cache`` measures).
"""

from __future__ import annotations

import argparse
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import uvicorn

from proxy.app import create_app
from proxy.config import parse

ALIAS = "default"
BENCH_KEY = "sk-fluido-bench-0123456789abcdef"
CONFIG_TOML = Path(__file__).resolve().parent.parent / "config.toml"
# The sections of config.toml that make up its chain; upstreams, models and server are the benchmark's.
CHAIN_SECTIONS = ("log", "metrics", "limits", "classifier", "cache", "buffer")
# High enough that no request is ever refused: the point is what checking them costs.
KEY_LIMITS = {"rpm": 100_000_000, "tpm": 1_000_000_000, "concurrency": 10_000}
ROUTING_ONLY = {
    "log": {"access_log": False},
    "metrics": {"enabled": False},
    "classifier": {"enabled": False},
    "cache": {"enabled": False},
    "buffer": {"enabled": False},
}


# One part of the full chain left out (``--without``), to see what it costs.
WITHOUT = {
    "key": {},
    "access_log": {"log": {"access_log": False}},
    "metrics": {"metrics": {"enabled": False}},
    "classifier": {"classifier": {"enabled": False}},
    "compaction": {"classifier": {"compaction": False}},
    "cache": {"cache": {"enabled": False}},
    "buffer": {"buffer": {"enabled": False}},
    "coalesce": {"buffer": {"coalesce": False}},
}


def full_chain(semantic: bool, without: str = "") -> dict[str, Any]:
    shipped = tomllib.loads(CONFIG_TOML.read_text(encoding="utf-8"))
    data = {section: shipped.get(section, {}) for section in CHAIN_SECTIONS}
    for section, values in WITHOUT.get(without, {}).items():
        data[section] = {**data[section], **values}
    semantic_cfg: dict[str, Any] = {**data["cache"].get("semantic", {}), "enabled": semantic}
    if semantic:  # its Chroma directory and embedding cache go to a scratch directory, not the repository
        scratch = Path(tempfile.mkdtemp(prefix="fluido-bench-semantic-"))
        semantic_cfg |= {"path": str(scratch / "chroma"), "embedding_cache": str(scratch / "emb.sqlite")}
    data["cache"] = {**data["cache"], "semantic": semantic_cfg}
    if without != "key":
        data["keys"] = {"bench": {"key_env": "BENCH_KEY", **KEY_LIMITS}}
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's /v1 base URL")
    parser.add_argument("--features", choices=("routing", "full", "default"), default="default")
    parser.add_argument("--semantic", action="store_true", help="full: with the semantic cache (its model)")
    parser.add_argument("--without", choices=WITHOUT, default="", help="full: leave this part out")
    parser.add_argument("--cache-redis", help="keep the response cache in this Redis (default: in memory)")
    args = parser.parse_args()
    data: dict[str, Any] = {
        "routing": ROUTING_ONLY,
        "full": full_chain(args.semantic, args.without) if args.features == "full" else {},
        "default": {},
    }[args.features]
    data |= {
        "upstreams": {"up": {"kind": "openai", "url": args.upstream}},
        "models": {ALIAS: {"targets": [{"upstream": "up", "model": "bench-model"}]}},
    }
    if args.cache_redis:
        data |= {"cache": {"backend": "redis"}, "redis": {"url": args.cache_redis}}
    cfg = parse(data, environ={"BENCH_KEY": BENCH_KEY})
    # The protocol `fluido serve` runs (uvicorn's httptools one, with a deadline on request headers).
    uvicorn.run(create_app(cfg), host="127.0.0.1", port=args.port, loop="uvloop",
                http="proxy.http_protocol:HeaderDeadlineProtocol", log_level="warning",
                access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
