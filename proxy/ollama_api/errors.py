"""Errors in Ollama's shape, ``{"error": "..."}``, with the status and headers (Retry-After) of the error.

Ollama's clients read the ``error`` string (the ``ollama`` Python client raises ``ResponseError`` with it and
the status); a stream that fails after its first line ends with one such object as its last line.
"""

from __future__ import annotations

import orjson
from starlette.types import Send

from proxy.asgi import send_error
from proxy.errors import FluidoError

PREFIX = "/api/"


def is_ollama_path(path: str) -> bool:
    return path.startswith(PREFIX) or path == "/api"


def error_body(error: FluidoError) -> bytes:
    return orjson.dumps({"error": error.message})


def error_line(error: FluidoError) -> bytes:
    return error_body(error) + b"\n"


async def send_ollama_error(send: Send, error: FluidoError, headers: list[tuple[bytes, bytes]]) -> None:
    await send_error(send, error, headers, error_body)


class NotThroughFluido(FluidoError):
    """A model-management route: models live on the upstream servers, not in the proxy."""

    status = 501
    type = "invalid_request_error"
    code = "not_supported"
