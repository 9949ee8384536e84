"""The wire decoders keep partial lines between reads: every test feeds its input split at every byte."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from adapters.decoders import NDJSONDecoder, SSEDecoder

Decoder = NDJSONDecoder | SSEDecoder


def feed_split(make: Callable[[], Decoder], data: bytes, cut: int) -> list[bytes]:
    decoder = make()
    out = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
    return out + decoder.finish()


def feed_bytewise(make: Callable[[], Decoder], data: bytes) -> list[bytes]:
    decoder = make()
    out: list[bytes] = []
    for i in range(len(data)):
        out += decoder.feed(data[i : i + 1])
    return out + decoder.finish()


SSE_STREAM = (
    b'data: {"a":1}\n\n'
    b": keep-alive comment\n\n"
    b'event: message\nid: 7\ndata: {"b":"caf\xc3\xa9"}\r\n\r\n'
    b"data: line one\ndata: line two\n\n"
    b"data:no-space\n\n"
    b"data: [DONE]\n\n"
)
SSE_EVENTS = [b'{"a":1}', b'{"b":"caf\xc3\xa9"}', b"line one\nline two", b"no-space", b"[DONE]"]

NDJSON_STREAM = b'{"a":1}\n\n{"b":"caf\xc3\xa9"}\r\n{"done":true}\n'
NDJSON_LINES = [b'{"a":1}', b'{"b":"caf\xc3\xa9"}', b'{"done":true}']


@pytest.mark.parametrize("cut", range(len(SSE_STREAM) + 1))
def test_sse_events_survive_a_split_at_every_byte(cut: int) -> None:
    assert feed_split(SSEDecoder, SSE_STREAM, cut) == SSE_EVENTS


def test_sse_events_survive_one_byte_reads() -> None:
    assert feed_bytewise(SSEDecoder, SSE_STREAM) == SSE_EVENTS


def test_sse_drops_an_unfinished_event_at_the_end_of_the_stream() -> None:
    assert feed_bytewise(SSEDecoder, b'data: {"a":1}\n\ndata: {"cut') == [b'{"a":1}']


def test_sse_ignores_fields_other_than_data() -> None:
    assert feed_bytewise(SSEDecoder, b"retry: 10\nevent: ping\n\n") == []


@pytest.mark.parametrize("cut", range(len(NDJSON_STREAM) + 1))
def test_ndjson_lines_survive_a_split_at_every_byte(cut: int) -> None:
    assert feed_split(NDJSONDecoder, NDJSON_STREAM, cut) == NDJSON_LINES


def test_ndjson_lines_survive_one_byte_reads() -> None:
    assert feed_bytewise(NDJSONDecoder, NDJSON_STREAM) == NDJSON_LINES


def test_ndjson_yields_a_last_line_without_newline_at_finish() -> None:
    assert feed_bytewise(NDJSONDecoder, b'{"a":1}\n{"done":true}') == [b'{"a":1}', b'{"done":true}']


def test_sse_events_read_one_whole_event_per_read() -> None:
    """The usual case, one event per read, takes a shortcut that must give what the line walk gives."""
    decoder = SSEDecoder()
    reads = [
        b'data: {"a":1}\n\n',
        b"data: two\ndata: lines\n\n",
        b'data: {"b"',
        b":2}\n\n",
        b"data: x\r\n\r\n",
    ]
    out = [event for read in reads for event in decoder.feed(read)]
    assert out == [b'{"a":1}', b"two\nlines", b'{"b":2}', b"x"]


def test_sse_events_read_several_whole_events_per_read() -> None:
    """Whole one-line events that arrived together take the shortcut too; anything else in the read (a
    comment, another field, a multi-line event, CRLF, a blank line too many) goes the line walk."""
    reads = [
        b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n',
        b"data: one\n\n: comment\n\ndata: two\n\n",
        b"data: three\n\nevent: x\ndata: four\n\n",
        b"data: five\n\ndata: six\ndata: more\n\n",
        b"data: seven\r\n\r\ndata: eight\n\n",
        b"data: nine\n\n\n\ndata: ten\n\n",
        b"data:  padded\n\ndata:tight\n\n",
        b'data: {"t":"data: x"}\n\ndata: \n\n',
        b"data: eleven\n\ndata: twelve\n",
    ]
    expected = [
        [b'{"a":1}', b'{"b":2}', b"[DONE]"],
        [b"one", b"two"],
        [b"three", b"four"],
        [b"five", b"six\nmore"],
        [b"seven", b"eight"],
        [b"nine", b"ten"],
        [b" padded", b"tight"],
        [b'{"t":"data: x"}', b""],
        [b"eleven"],
    ]
    decoder = SSEDecoder()
    assert [decoder.feed(read) for read in reads] == expected
    # The same reads, byte by byte (never the shortcut), give the same events.
    assert [feed_bytewise(SSEDecoder, read) for read in reads] == expected
