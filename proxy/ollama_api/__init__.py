"""Ollama's API as a second door onto the chain: apps written for Ollama change only their host.

``decode`` turns Ollama's bodies into the request types every door shares, ``encode`` renders replies as
Ollama's JSON and NDJSON, ``errors`` gives errors Ollama's shape; ``routes``, ``embed`` and ``models`` are the
handlers, and ``mount.ollama_routes`` is what the app factory mounts. This file imports nothing, so the
authentication layer can use ``errors`` without pulling in the rest.
"""
