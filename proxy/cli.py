"""``fluido serve``, ``fluido check-config`` and ``fluido ingest``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from collections.abc import Sequence

from starlette.applications import Starlette

from proxy.config import ConfigError, load

DEFAULT_CONFIG = "config.toml"
# How `serve` tells its worker processes which file to load (uvicorn starts them from an import string).
CONFIG_PATH_ENV = "FLUIDO_CONFIG"


def app_factory() -> Starlette:
    """The app of one worker process; uvicorn calls this in each one."""
    from proxy.app import create_app

    return create_app(load(os.environ.get(CONFIG_PATH_ENV, DEFAULT_CONFIG)))


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    cfg = load(args.config)
    server = dataclasses.replace(
        cfg.server,
        host=args.host or cfg.server.host,
        port=args.port or cfg.server.port,
        workers=args.workers or cfg.server.workers,
    )
    os.environ[CONFIG_PATH_ENV] = os.path.abspath(args.config)
    if server.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Workers write their metrics to files here, so that any worker's /metrics adds all of them up.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fluido-metrics-")
    uvicorn.run(
        "proxy.cli:app_factory",
        factory=True,
        host=server.host,
        port=server.port,
        workers=server.workers,
        loop="uvloop",
        http="proxy.http_protocol:HeaderDeadlineProtocol",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    return 0


def check_config(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    s = cfg.server
    print(f"{args.config}: OK")
    print(f"  listen   {s.host}:{s.port}, {s.workers} worker(s), bodies up to {s.max_body_bytes} bytes")
    for up in cfg.upstreams.values():
        launched = " (launched by Fluido)" if up.embedded else ""
        print(f"  upstream {up.name}: {up.kind} at {up.url}{launched}")
    for model in cfg.models.values():
        route = " -> ".join(f"{t.upstream}:{t.model}" for t in model.targets)
        print(f"  model    {model.alias}: {route}")
    return 0


def ingest(args: argparse.Namespace) -> int:
    # The CLI is a composition point, like the app factory: the command itself lives with RAG, imported
    # only when it runs.
    from middleware.rag.cli import ingest_command

    return ingest_command(load(args.config).rag, args.store, args.paths)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="fluido", description="OpenAI-compatible proxy for self-hosted LLMs.")
    commands = root.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="start the proxy")
    run.add_argument("--config", default=DEFAULT_CONFIG, help="path to config.toml")
    run.add_argument("--host", help="listen address (overrides server.host)")
    run.add_argument("--port", type=int, help="listen port (overrides server.port)")
    run.add_argument("--workers", type=int, help="worker processes (overrides server.workers)")
    run.set_defaults(handler=serve)
    check = commands.add_parser("check-config", help="validate a configuration and summarise it")
    check.add_argument("--config", default=DEFAULT_CONFIG, help="path to config.toml")
    check.set_defaults(handler=check_config)
    load_docs = commands.add_parser("ingest", help="load documents into a vector store (RAG)")
    load_docs.add_argument("--config", default=DEFAULT_CONFIG, help="path to config.toml")
    load_docs.add_argument("--store", required=True, help="vector store name or id (created if missing)")
    load_docs.add_argument(
        "paths", nargs="+", metavar="PATH", help="txt, md, html or jsonl files, or folders"
    )
    load_docs.set_defaults(handler=ingest)
    # Listed for --help only: main() hands "bench" and its arguments to the tool's own parser.
    commands.add_parser("bench", help="load-test and compare endpoints (fluido bench --help)", add_help=False)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from bench.load.cli import main as bench

        return bench(argv[1:])
    args = parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"{args.config}: invalid configuration", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
