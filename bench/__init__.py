"""Benchmarks: ``python -m bench.overhead`` measures the latency and CPU that Fluido adds to each request."""
