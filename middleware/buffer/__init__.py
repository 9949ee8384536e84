"""The adaptive buffer: admission queue, learned concurrency limit and stream coalescing per upstream."""
