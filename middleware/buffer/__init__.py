"""The adaptive buffer: admission queue, learned concurrency limit and stream coalescing per upstream."""

from middleware.buffer.build import BufferParts, build_buffer
from middleware.buffer.shared import LeaseCount

__all__ = ["BufferParts", "LeaseCount", "build_buffer"]
