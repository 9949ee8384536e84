"""structlog set-up: JSON lines (or a readable console) on stdout, filtered by level."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

from proxy.config import LogConfig


def configure_logging(cfg: LogConfig) -> None:
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if cfg.format == "console"
        else structlog.processors.JSONRenderer(serializer=orjson.dumps)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(cfg.level.upper())),
        logger_factory=(
            structlog.PrintLoggerFactory(sys.stdout)
            if cfg.format == "console"
            else structlog.BytesLoggerFactory(sys.stdout.buffer)
        ),
        cache_logger_on_first_use=True,
    )
