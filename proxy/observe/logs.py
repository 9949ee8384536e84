"""Structured logging that never stalls a request.

structlog renders each record (JSON through orjson, or a console line) and hands the bytes to a bounded
buffer; one background thread writes them out. A slow or blocked stdout therefore costs requests nothing:
when the buffer is full the record is dropped and counted, never waited for.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson
import structlog

from proxy.config import LogConfig

# While records keep coming, the writer wakes this often and writes what gathered, in one write: nothing
# signals it per record, because waking a thread (and handing the GIL over) cost more than rendering the
# record did. After IDLE_POLLS wakes that found nothing, it sleeps until the next record signals it.
LINGER_SECONDS = 0.02
IDLE_POLLS = 50


class LogWriter:
    """A bounded buffer of rendered lines and the one thread that writes them to ``sink`` in batches."""

    def __init__(self, sink: BinaryIO, capacity: int, linger: float = LINGER_SECONDS) -> None:
        self.sink = sink
        self.capacity = capacity
        self.linger = linger
        self.dropped = 0
        self.on_drop: Callable[[], None] | None = None
        # deque.append and popleft are atomic under the GIL: writers take no lock.
        self._lines: deque[bytes] = deque()
        self._in_hand = 0
        self._idle = False  # the thread waits for ``_wake`` rather than polling
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def write(self, line: bytes) -> None:
        # The bound counts every line not yet written, the batch in the thread's hands included.
        if len(self._lines) + self._in_hand >= self.capacity:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()
            return
        self._lines.append(line)
        if self._idle:
            self._idle = False
            self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="fluido-log-writer", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Write what is buffered (waiting at most ``timeout``), then stop the thread."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        # A stuck sink: the daemon thread is abandoned rather than waited for.
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        lines = self._lines
        quiet = 0  # wakes in a row that found nothing to write
        while True:
            if lines or self._stopping:
                quiet = 0
            elif (quiet := quiet + 1) > IDLE_POLLS:
                quiet = 0
                self._wake.clear()
                self._idle = True
                # Checked again after announcing the wait: a line appended in between is not missed,
                # and one appended after this sees ``_idle`` and sets the event.
                if not lines and not self._stopping:
                    self._wake.wait()
                self._idle = False
            if not self._stopping:
                time.sleep(self.linger)  # let the batch gather
            self._in_hand = len(lines)
            batch = [lines.popleft() for _ in range(self._in_hand)]
            if batch:
                self.sink.write(b"\n".join(batch) + b"\n")
                self.sink.flush()
            self._in_hand = 0
            if self._stopping and not lines:
                return


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
