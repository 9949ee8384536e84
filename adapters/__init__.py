"""Upstream protocols, one module each: ``ollama`` (native /api/chat), ``openai_compat`` (any /v1 server)."""

from __future__ import annotations

from adapters.ollama import OllamaAdapter
from adapters.openai_compat import OpenAICompatAdapter
from proxy.config_upstreams import UpstreamConfig
from proxy.types import Adapter


def adapter_for(cfg: UpstreamConfig) -> Adapter:
    return OllamaAdapter(cfg) if cfg.kind == "ollama" else OpenAICompatAdapter(cfg)
