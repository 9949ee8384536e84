"""Folds the middleware list into one handler, once, at start-up."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from proxy.types import Handler, Middleware


def build_chain(middleware: Sequence[Middleware], endpoint: Handler) -> Handler:
    """``[a, b]`` around ``endpoint`` gives ``a(call, next=b(call, next=endpoint))``."""
    handler = endpoint
    for link in reversed(middleware):
        handler = partial(link.__call__, next=handler)
    return handler
