"""Sans-IO wire decoders: bytes in, complete messages out, partial lines kept between reads.

They never see a socket, so they are tested by feeding input split at every byte.
"""

from __future__ import annotations


class LineBuffer:
    """Splits a byte stream into lines ending in LF or CRLF; keeps the unfinished tail."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> list[bytes]:
        if b"\n" not in data:
            self._tail += data
            return []
        lines = (self._tail + data).split(b"\n")
        self._tail = lines.pop()
        return [line[:-1] if line.endswith(b"\r") else line for line in lines]

    @property
    def pending(self) -> bool:
        """True while an unfinished line is kept."""
        return bool(self._tail)

    def flush(self) -> bytes:
        tail, self._tail = self._tail, b""
        return tail[:-1] if tail.endswith(b"\r") else tail


class NDJSONDecoder:
    """Ollama's stream framing: one JSON document per line. Yields each non-blank line's bytes."""

    __slots__ = ("_lines",)

    def __init__(self) -> None:
        self._lines = LineBuffer()

    def feed(self, data: bytes) -> list[bytes]:
        return [line for line in self._lines.feed(data) if line.strip()]

    def finish(self) -> list[bytes]:
        """The last line, when the stream ended without a final newline."""
        tail = self._lines.flush()
        return [tail] if tail.strip() else []


class SSEDecoder:
    """Server-sent events as OpenAI-compatible servers send them: yields the data of each event.

    Multi-line data is joined with LF; comments (``:``) and the ``event``/``id``/``retry`` fields are
    ignored. An event is complete at its blank line; an unfinished one at the end of the stream is dropped,
    as the SSE specification says.
    """

    __slots__ = ("_data", "_lines")

    def __init__(self) -> None:
        self._lines = LineBuffer()
        self._data: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes]:
        # The usual read is whole events of one line each, "data: {...}\n\n" (one, or several that
        # arrived together), with nothing pending: their data are what lies between the "data: "s, when
        # the only line feeds are the events' own. Anything else goes the general way.
        if (
            data.startswith(b"data: ")
            and data.endswith(b"\n\n")
            and not self._data
            and not self._lines.pending
            and b"\r" not in data
        ):
            events = data[6:-2].split(b"\n\ndata: ")
            if data.count(b"\n") == 2 * len(events):
                return events
        return self._walk(data)

    def _walk(self, data: bytes) -> list[bytes]:
        """The general way: line by line, as the SSE specification reads a stream."""
        events: list[bytes] = []
        for line in self._lines.feed(data):
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
        return events

    def finish(self) -> list[bytes]:
        self._lines.flush()
        self._data = []
        return []
