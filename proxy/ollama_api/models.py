"""Ollama's model routes over Fluido's aliases: ``/api/tags``, ``/api/show``, ``/api/ps``.

Clients see the aliases, never the upstream's names. Where an alias is served by an Ollama upstream, its
entry carries what that server reports (size, digest, details, capabilities, what is loaded); elsewhere
it carries what Fluido knows, and nothing it does not.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import orjson
import structlog
from starlette.types import Receive, Scope, Send

from proxy.asgi import BodyLimits, ClientGone, failed, send_bytes, trace_of
from proxy.config_upstreams import ModelConfig
from proxy.errors import FluidoError, UpstreamError
from proxy.ollama_api.decode import resolve
from proxy.ollama_api.encode import created_at
from proxy.ollama_api.errors import send_ollama_error
from proxy.parsing import decode_object
from proxy.types import JSON, Adapter, Target

log = structlog.get_logger("fluido.ollama")
JSON_HEADERS = [(b"content-type", b"application/json; charset=utf-8")]
_NO_DETAILS = {
    "parent_model": "", "format": "", "family": "", "families": None, "parameter_size": "",
    "quantization_level": "",
}  # fmt: skip


@runtime_checkable
class Catalog(Protocol):
    """An upstream that describes its models in Ollama's terms (an Ollama server)."""

    async def tags(self) -> list[JSON]: ...

    async def show(self, model: str) -> JSON: ...

    async def running(self) -> list[JSON]: ...


def tagged(alias: str) -> str:
    """The alias as Ollama names models, with a tag: "chat" is listed as "chat:latest"."""
    return alias if ":" in alias else f"{alias}:latest"


def _name(entry: Any) -> str:
    return str(entry.get("model") or entry.get("name")) if isinstance(entry, dict) else ""


def _same_model(a: str, b: str) -> bool:
    return tagged(a) == tagged(b)


class ModelRoutes:
    """The three routes, over the configured aliases and the adapters of their upstreams."""

    def __init__(
        self, models: Mapping[str, ModelConfig], adapters: Mapping[str, Adapter], limits: BodyLimits
    ) -> None:
        self.models = models
        self.catalogs = {name: a for name, a in adapters.items() if isinstance(a, Catalog)}
        self.limits = limits
        self.since = created_at()  # the aliases exist since Fluido started

    def _entry(self, alias: str, found: Mapping[str, Any] | None) -> dict[str, Any]:
        name = tagged(alias)
        entry: dict[str, Any] = {
            "name": name,
            "model": name,
            "modified_at": self.since,
            "size": 0,
            "digest": hashlib.sha256(alias.encode()).hexdigest(),
            "details": _NO_DETAILS,
        }
        if found is not None:
            entry.update({k: found[k] for k in ("modified_at", "size", "digest", "details") if k in found})
        return entry

    async def _ask_all(self, what: str) -> dict[str, list[JSON]]:
        """Every Ollama upstream's ``tags()`` or ``running()``, all at once; one that fails is left out."""

        async def ask(name: str, catalog: Catalog) -> list[JSON] | None:
            try:
                return await (catalog.tags() if what == "tags" else catalog.running())
            except UpstreamError as exc:
                log.warning("ollama_upstream_unavailable", upstream=name, asked=what, error=exc.message)
                return None

        names = list(self.catalogs)
        answers = await asyncio.gather(*(ask(name, self.catalogs[name]) for name in names))
        return {name: answer for name, answer in zip(names, answers, strict=True) if answer is not None}

    async def tags(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET /api/tags: every alias, described by its first target where that is an Ollama server."""
        upstream = await self._ask_all("tags")
        entries = []
        for alias, model in self.models.items():
            first = model.targets[0]
            listed = upstream.get(first.upstream, [])
            found = next((m for m in listed if _same_model(_name(m), first.model)), None)
            entries.append(self._entry(alias, found))
        await send_bytes(send, 200, orjson.dumps({"models": entries}), JSON_HEADERS)

    async def _show_upstream(self, target: Target) -> dict[str, Any] | None:
        catalog = self.catalogs.get(target.upstream)
        if catalog is None:
            return None
        try:
            shown = await catalog.show(target.model)
        except UpstreamError as exc:
            log.warning("ollama_show_unavailable", upstream=target.upstream, error=exc.message)
            return None
        return shown if isinstance(shown, dict) else None

    async def show(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /api/show: the first target's own description where it is an Ollama server."""
        trace = trace_of(scope)
        try:
            data = decode_object(await self.limits.read(scope, receive))
            _, alias = resolve(data.get("model") or data.get("name"), self.models)  # "name": older clients
        except ClientGone:
            return
        except FluidoError as exc:
            await send_ollama_error(send, failed(trace, exc), [])
            return
        trace.model = alias
        shown = await self._show_upstream(self.models[alias].targets[0])
        if shown is None:
            shown = {
                "modelfile": "", "parameters": "", "template": "", "details": _NO_DETAILS, "model_info": {},
                "capabilities": ["completion"], "modified_at": self.since,
            }  # fmt: skip
        await send_bytes(send, 200, orjson.dumps(shown), JSON_HEADERS)

    async def ps(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET /api/ps: the aliases whose models an Ollama upstream has loaded now."""
        entries = []
        for name, running in (await self._ask_all("running")).items():
            for loaded in running:
                if not isinstance(loaded, dict):
                    continue
                model = _name(loaded)
                for alias, config in self.models.items():
                    if any(t.upstream == name and _same_model(t.model, model) for t in config.targets):
                        entries.append({**loaded, "name": tagged(alias), "model": tagged(alias)})
        await send_bytes(send, 200, orjson.dumps({"models": entries}), JSON_HEADERS)
