"""The response cache: exact repeats (and, when enabled, near-repeats) cost the GPU nothing.

Exact: the key is a hash of the canonical form (sorted-key JSON) of every field that changes the output,
after the classifier's profile and compaction. Only deterministic requests are cached (temperature 0 or a
seed) unless ``cache.sampled`` is on. Semantic: on an exact miss, a question of an enabled class, with few
enough turns and no tools, may be answered by an earlier one that embeds close enough, has the same model,
the same preceding conversation, the same parameters, and the same numbers, quoted strings, negations and
names (``semantic.py`` and ``guard.py``). Entries are the API key's own unless the key shares.

``Cache-Control: no-cache`` skips the lookup but stores; ``no-store`` does neither. The outcome is the
``x-fluido-cache`` header (hit, semantic, miss, bypass). A store that cannot be reached turns the cache off
for that request, never the request itself.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog

from middleware.cache.config import CacheConfig, SemanticConfig
from middleware.cache.record import CorruptRecord, Recorder, completion_of, decode, encode_completion, replay
from middleware.cache.store import CacheStore, CacheUnavailable, cache_key
from middleware.limits import KeyConfig
from proxy.tap import tap
from proxy.types import Call, ChatRequest, Completion, Handler, Reply, Stream
from proxy.writer import message_body

log = structlog.get_logger("fluido.cache")
# Body fields that do not change the answer.
NEUTRAL_EXTRAS = frozenset({"user", "metadata", "store", "stream_options", "service_tier", "keep_alive"})
# RAG outcomes (its ``rag`` note) where the reply lacks the context the key was made for.
RAG_DEGRADED = frozenset({"unavailable", "store_missing"})


class Candidate(Protocol):
    """An earlier question the index found close enough (``middleware.cache.semantic.Candidate``)."""

    @property
    def key(self) -> str: ...

    @property
    def similarity(self) -> float: ...


class Index(Protocol):
    """The semantic index (``middleware.cache.semantic.SemanticIndex``)."""

    async def search(
        self, text: str, where: dict[str, str], threshold: float, limit: int = 3
    ) -> Sequence[Candidate]: ...

    async def add(self, key: str, text: str, metadata: dict[str, str]) -> None: ...

    async def purge(self, namespace: str | None) -> None: ...

    async def ping(self) -> None: ...

    def close(self) -> None: ...


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def params_of(req: ChatRequest) -> dict[str, Any]:
    """Every output-affecting field but the messages."""
    return {
        "model": req.model,
        "tools": list(req.tools),
        "tool_choice": req.tool_choice,
        "response_format": req.response_format,
        "max_tokens": req.max_tokens,
        "stop": list(req.stop),
        "seed": req.seed,
        # Omitted means OpenAI's default of 1.0, not "deterministic".
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "top_p": req.top_p,
        "presence_penalty": req.presence_penalty,
        "frequency_penalty": req.frequency_penalty,
        "n": req.n,
        "extra": {k: v for k, v in req.extra.items() if k not in NEUTRAL_EXTRAS},
        "profile": [dict(req.profile_ollama_options), dict(req.profile_extra)],
    }


def exact_digest(req: ChatRequest, rag_version: str | None = None) -> str:
    params = params_of(req)
    if rag_version:  # the injected context is a function of the request and the stores' generations
        params["rag"] = rag_version
    return _digest({"params": params, "messages": [message_body(m) for m in req.messages]})


def deterministic(req: ChatRequest) -> bool:
    return req.temperature == 0 or req.seed is not None


class ResponseCache:
    """The chain link."""

    def __init__(
        self,
        store: CacheStore,
        cfg: CacheConfig,
        keys: Mapping[str, KeyConfig],
        index: Index | None = None,
        on_unavailable: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.keys = keys
        self.index = index
        self.on_unavailable = on_unavailable
        self._background: set[asyncio.Task[None]] = set()

    def namespace(self, call: Call) -> str:
        key = self.keys.get(call.trace.key or "")
        if key is None:
            return "public"  # no API keys: one tenant
        return "shared" if key.share_cache else f"key-{key.name}"

    async def __call__(self, call: Call, next: Handler) -> Reply:
        req, notes, control = call.request, call.notes, call.trace.cache_control
        rag = notes.get("rag_version")
        # RAG could not tell which generation of its stores this request reads: neither look up nor store.
        if "no-store" in control or not (self.cfg.sampled or deterministic(req)) or rag == "unavailable":
            notes["cache"] = "bypass"
            return await next(call)
        namespace = self.namespace(call)
        key = cache_key(namespace, exact_digest(req, rag))
        semantic = self._semantic_query(call)
        if "no-cache" not in control:
            if (reply := await self._lookup(key, req.stream)) is not None:
                notes["cache"] = "hit"
                return reply
            if semantic is not None:
                found = await self._semantic_lookup(semantic, namespace, req, notes.get("query_class", ""))
                if found is not None:
                    reply, similarity = found
                    notes["cache"], notes["cache_similarity"] = "semantic", f"{similarity:.3f}"
                    return reply
        notes["cache"] = "miss"
        reply = await next(call)
        if notes.get("rag") in RAG_DEGRADED:  # answered without the context its key stands for
            return reply
        index_entry = (semantic, self._where(namespace, req)) if semantic is not None else None
        if isinstance(reply, Completion):
            await self._store(key, encode_completion(reply), index_entry)
            return reply
        return self._recording(reply, key, index_entry)

    async def _lookup(self, key: str, stream: bool) -> Reply | None:
        try:
            raw = await self.store.get(key)
        except CacheUnavailable as exc:
            self._unavailable(exc)
            return None
        if raw is None:
            return None
        try:
            record = decode(raw)
        except CorruptRecord:
            await self._guard(self.store.delete(key))
            return None
        return replay(record) if stream else completion_of(record)

    def _semantic_query(self, call: Call) -> str | None:
        """The text to look up by meaning, if this request may be answered by a near-repeat at all."""
        req, semantic = call.request, self.cfg.semantic
        if self.index is None or call.notes.get("query_class") not in semantic.classes or req.tools:
            return None
        if "rag_version" in call.notes:  # a paraphrase retrieves other passages: exact repeats only
            return None
        users = [m for m in req.messages if m.role == "user"]
        if len(users) > semantic.max_turns or any(m.role == "tool" or m.tool_calls for m in req.messages):
            return None
        last = users[-1].content if users else None
        return last if isinstance(last, str) and last.strip() else None

    def _where(self, namespace: str, req: ChatRequest) -> dict[str, str]:
        *before, _ = [message_body(m) for m in req.messages]
        return {
            "namespace": namespace,
            "model": req.model,
            "context": _digest(before),
            "params": _digest(params_of(req)),
        }

    async def _semantic_lookup(
        self, text: str, namespace: str, req: ChatRequest, query_class: str
    ) -> tuple[Reply, float] | None:
        assert self.index is not None
        semantic = self.cfg.semantic
        threshold = semantic.thresholds.get(query_class, semantic.threshold)
        try:
            candidates = await self.index.search(text, self._where(namespace, req), threshold)
        except CacheUnavailable as exc:  # the index's SemanticUnavailable is one
            self._unavailable(exc)
            return None
        for candidate in candidates:
            if (reply := await self._lookup(candidate.key, req.stream)) is not None:
                return reply, candidate.similarity
        return None

    def _recording(self, stream: Stream, key: str, index_entry: tuple[str, dict[str, str]] | None) -> Stream:
        recorder = Recorder()

        async def keep(finished: bool) -> None:
            # Only a stream that ended normally is kept: an errored or abandoned one is not finished.
            if finished and recorder.complete:
                await self._store(key, recorder.encode(), index_entry)

        return tap(stream, recorder.add, keep)

    async def _store(self, key: str, value: bytes, index_entry: tuple[str, dict[str, str]] | None) -> None:
        await self._guard(self.store.set(key, value, self.cfg.ttl_seconds))
        if index_entry is not None and self.index is not None:
            # Embedding takes milliseconds: the reply does not wait for it.
            task = asyncio.create_task(self._guard(self.index.add(key, *index_entry)))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _guard(self, work: Coroutine[Any, Any, Any]) -> None:
        try:
            await work
        except CacheUnavailable as exc:  # the store's, or the semantic index's: never the client's problem
            self._unavailable(exc)

    async def ping_index(self) -> None:
        if self.index is None:
            raise CacheUnavailable("The semantic index is not ready (its model is loading, or failed to).")
        await self.index.ping()

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await self.store.close()
        if self.index is not None:
            self.index.close()

    def _unavailable(self, exc: Exception) -> None:
        self.on_unavailable()
        log.warning("cache_unavailable", error=str(exc) or type(exc).__name__)


async def attach_semantic_index(cache: ResponseCache, cfg: SemanticConfig) -> None:
    """Build the semantic index (it loads a model) off the event loop, then let the cache use it."""
    if not cfg.enabled:
        return
    # Heavy (a model, chromadb): imported only when the semantic cache is on.
    from middleware.cache.semantic import SemanticIndex
    from proxy.services.embedder import Embedder

    def build() -> SemanticIndex:
        cache_path = Path(cfg.embedding_cache) if cfg.embedding_cache else None
        if cache_path is not None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
        return SemanticIndex(
            Embedder(cache_path=cache_path),
            path=cfg.path or None,
            host=cfg.host or None,
            port=cfg.port,
            m=cfg.hnsw_m,
            construction_ef=cfg.hnsw_construction_ef,
            search_ef=cfg.hnsw_search_ef,
        )

    try:
        cache.index = await asyncio.to_thread(build)
        log.info("semantic_cache_ready")
    except Exception as exc:  # a missing model or an unreachable Chroma server: exact caching goes on
        log.error("semantic_cache_unavailable", error=str(exc) or type(exc).__name__)
