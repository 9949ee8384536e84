"""Structured logging that never stalls a request.

structlog renders each record (JSON through orjson, or a console line) and hands the bytes to a bounded
queue; one background thread writes them out. A slow or blocked stdout therefore costs requests nothing:
when the queue is full the record is dropped and counted, never waited for.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson
import structlog

from proxy.config import LogConfig

_STOP = object()


class LogWriter:
    """A bounded queue of rendered lines and the one thread that writes them to ``sink``."""

    def __init__(self, sink: BinaryIO, capacity: int) -> None:
        self.sink = sink
        self.dropped = 0
        self.on_drop: Callable[[], None] | None = None
        self._queue: queue.Queue[object] = queue.Queue(maxsize=capacity)
        self._thread: threading.Thread | None = None

    def write(self, line: bytes) -> None:
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fluido-log-writer", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (waiting at most ``timeout``), then stop the thread."""
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return  # the sink is stuck: the daemon thread is abandoned rather than waited for
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                self.sink.flush()
                return
            assert isinstance(item, bytes)
            self.sink.write(item + b"\n")
            if self._queue.empty():
                self.sink.flush()


class QueueLogger:
    """structlog's final logger: passes the rendered record to the current writer's queue.

    structlog's configuration is process-wide and loggers are cached on first use, so the logger looks the
    writer up at each call: a reconfiguration (a new app in the same process) takes effect everywhere.
    """

    writer: LogWriter | None = None

    def msg(self, message: bytes | str) -> None:
        if (writer := QueueLogger.writer) is not None:
            writer.write(message if isinstance(message, bytes) else message.encode())

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def configure_logging(cfg: LogConfig, sink: BinaryIO | None = None) -> LogWriter:
    """Route structlog through a new writer (not started yet) and return it."""
    writer = LogWriter(sink if sink is not None else sys.stdout.buffer, cfg.queue_size)
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
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
        logger_factory=lambda *args: QueueLogger(),
        cache_logger_on_first_use=True,
    )
    QueueLogger.writer = writer
    return writer
