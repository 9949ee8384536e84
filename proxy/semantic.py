"""The semantic side of the response cache: question embeddings in Chroma, mapped to exact cache keys.

The cached value lives elsewhere under its exact key; this index only answers "which earlier question is
this one a paraphrase of?". A candidate must clear a similarity threshold and ``same_specifics``, because a
near-miss answering a different question (2+2 vs 2+3, Paris vs Lyon) is worse than a cache miss. The guard
cannot see everything: word order without names or numbers ("string to integer" vs "integer to string")
is left to the threshold, which does not catch it.

Importing this module imports chromadb (about a second): import it only when the semantic cache is on.

Errors::

    SemanticUnavailable   Chroma could not be reached or failed; the caller treats it as a miss
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import chromadb
import httpx
import numpy as np
from chromadb.config import Settings
from chromadb.errors import ChromaError, NotFoundError

from middleware.centroids import load_minilm
from proxy.cache_store import CacheUnavailable

T = TypeVar("T")

# Numbers are digits or number words, in order ("10 / 2" is not "2 / 10"). Only spellings that are
# unambiguous in English are merged: "1,000" (comma thousands groups) is "1000", "3.0" and "2.50" (one or
# two trailing decimal zeros) are "3" and "2.5", "two"/"dos" is "2". "1,5" and "1.5" stay different: a miss,
# never a false hit. "one"/"uno" and "first" are left out: they are mostly not numbers.
_NUMBER_WORDS = {
    word: value
    for value, words in {
        "0": "zero cero", "2": "two dos second segundo segunda", "3": "three tres third tercero tercera",
        "4": "four cuatro fourth cuarto cuarta", "5": "five cinco fifth quinto quinta", "6": "six seis sixth",
        "7": "seven siete seventh", "8": "eight ocho eighth", "9": "nine nueve ninth", "10": "ten diez tenth",
        "11": "eleven once", "12": "twelve doce", "20": "twenty veinte", "30": "thirty treinta",
        "50": "fifty cincuenta", "100": "hundred cien ciento", "1000": "thousand mil",
        "1000000": "million millón millones", "1000000000": "billion",
    }.items()
    for word in words.split()
}  # fmt: skip
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*|\b(?:" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+")
_SHORT_DECIMAL = re.compile(r"(\d+)\.(\d{1,2})")
# Quoted strings and inline code. A single quote opens only after a non-word character, so the
# apostrophes in "what's France's" are not quotes.
_QUOTED = re.compile(
    r"\"([^\"]+)\"|(?<!\w)'([^']+)'(?!\w)|«([^»]+)»|“([^”]+)”|\u2018([^\u2019]+)\u2019|`([^`]+)`"
)
_NEGATION = re.compile(
    r"\b(?:not|no|never|none|nothing|nobody|neither|nor|without|cannot"  # English
    r"|sin|nunca|jamás|ni|tampoco|nadie|nada"  # Spanish
    r"|ne|pas|jamais|sans|aucun|aucune"  # French
    r"|nicht|kein|keine|keinen|keinem|keiner|keines|nie|niemals|ohne"  # German
    r"|non|mai|nessuno|senza"  # Italian
    r"|não|nem|sem|nenhum|nenhuma)\b"  # Portuguese
    r"|n['\u2019]t\b|\bn['\u2019](?=\w)",  # isn't, n'est
    re.IGNORECASE,
)
# Opposites that embeddings place close together ("good"/"bad" 0.94, "before"/"after" 0.95 with MiniLM).
# A pair fails only when the two texts take different sides; a text silent on an axis does not.
_OPPOSITES = (
    ("good better best bueno buena buenos buenas mejor mejores",
     "bad worse worst malo mala malos malas peor peores"),
    ("before antes", "after después despues"),
    ("advantage advantages pros benefits ventaja ventajas beneficios",
     "disadvantage disadvantages cons drawbacks downsides desventaja desventajas inconvenientes"),
    ("increase raise boost aumentar subir incrementar", "decrease reduce reducir disminuir bajar"),
    ("big bigger biggest large larger largest grande grandes mayor",
     "small smaller smallest little tiny pequeño pequeña pequeños pequeñas menor"),
    ("high higher highest tall taller tallest alto alta",
     "low lower lowest short shorter shortest bajo baja"),
    ("max maximum máximo máxima", "min minimum mínimo mínima"),
    ("more most más", "less least fewer menos"),
    ("first primero primera primer", "last último última ultimo"),
    ("add insert append añadir agregar", "remove delete drop eliminar borrar quitar"),
    ("true verdadero", "false falso"),
    ("cheap cheaper cheapest barato barata", "expensive caro"),
    ("fast faster fastest quick rápido rápida", "slow slower slowest lento lenta"),
    ("hot caliente", "cold frío fría"),
)  # fmt: skip
_POLES = {
    w: (axis, side) for axis, pair in enumerate(_OPPOSITES) for side in (0, 1) for w in pair[side].split()
}
_WORD = re.compile(r"[^\W\d_]\w*")
# A word at the start of the text or after a sentence end (opening quotes and ¿ ¡ skipped): its capital
# says nothing about it being a name. Colons do not end a sentence, which keeps "French: Hello" strict.
_SENTENCE_START = re.compile(r"(?:^|[.!?…\n])[\s\"'«“\u2018¿¡(\[*`-]*([^\W\d_]\w*)")


def _numbers(text: str) -> list[str]:
    found = []
    for raw in _NUMBER.findall(text):
        if (word := _NUMBER_WORDS.get(raw.casefold())) is not None:
            raw = word
        elif _THOUSANDS.fullmatch(raw):
            raw = raw.replace(",", "")
        elif short := _SHORT_DECIMAL.fullmatch(raw):
            whole, decimals = short.groups()
            decimals = decimals.rstrip("0")
            raw = f"{whole}.{decimals}" if decimals else whole
        found.append(raw)
    return found


def _quoted(text: str) -> list[str]:
    return [next(g for g in m.groups() if g is not None).strip() for m in _QUOTED.finditer(text)]


def _sides(text: str) -> dict[int, set[int]]:
    found: dict[int, set[int]] = {}
    for word in _WORD.findall(text.casefold()):
        if (pole := _POLES.get(word)) is not None:
            found.setdefault(pole[0], set()).add(pole[1])
    return found


def _entities(text: str) -> list[str]:
    """Names in order of first use: "convert Fahrenheit to Celsius" is not "Celsius to Fahrenheit"."""
    starts = {m.start(1) for m in _SENTENCE_START.finditer(text)}
    found: dict[str, None] = {}
    for m in _WORD.finditer(text):
        word = m.group()
        acronym = len(word) > 1 and word.isupper()
        # "I" is a pronoun, not a name; "World War I" vs "II" still differs through "II".
        if acronym or (word[0].isupper() and m.start() not in starts and word != "I"):
            found[word.casefold()] = None
    return list(found)


def same_specifics(query: str, candidate: str) -> bool:
    """Whether two texts agree on what embeddings blur: numbers, quotes, negation, opposites and names.

    Numbers, quoted strings and names must match in order. Names are words capitalised mid-sentence plus
    all-caps acronyms, compared case-insensitively: German nouns therefore count as names, and a lowercase
    "france" is not one. Strict on purpose; a capitalised name that opens a sentence goes unseen.
    """
    if (_NEGATION.search(query) is None) != (_NEGATION.search(candidate) is None):
        return False
    if _numbers(query) != _numbers(candidate) or _quoted(query) != _quoted(candidate):
        return False
    mine, theirs = _sides(query), _sides(candidate)
    if any(mine[axis] != theirs[axis] for axis in mine.keys() & theirs.keys()):
        return False
    return _entities(query) == _entities(candidate)


class Embedder:
    """all-MiniLM-L6-v2 sentence vectors, cached in memory and in SQLite, computed off the event loop."""

    def __init__(
        self,
        model: Any | None = None,
        cache_path: Path | None = None,
        max_entries: int = 10_000,
        ttl_seconds: float = 7 * 86400,
    ) -> None:
        self.model = model if model is not None else load_minilm()
        self.cache_path = cache_path
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._memory: OrderedDict[str, tuple[float, list[float]]] = OrderedDict()
        # One thread owns the model and the SQLite connection (a connection belongs to its thread).
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fluido-embed")
        self._db: sqlite3.Connection | None = None
        self._writes = 0
        self._closed = False

    async def embed(self, text: str) -> list[float]:
        key = hashlib.sha256(text.encode()).hexdigest()
        known = self._memory.get(key)
        if known is not None and time.time() - known[0] < self.ttl_seconds:
            self._memory.move_to_end(key)
            return list(known[1])  # a copy: callers may not corrupt the cache
        loop = asyncio.get_running_loop()
        stamp, vector = await loop.run_in_executor(self._pool, self._load_or_embed, key, text)
        self._memory[key] = (stamp, vector)
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)
        return list(vector)

    def _database(self) -> sqlite3.Connection | None:
        if self._db is None and self.cache_path is not None:
            try:
                self._db = sqlite3.connect(self.cache_path, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")  # several workers may share the file
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, created REAL, vector BLOB)"
                )
                self._prune()
            except sqlite3.Error:
                self.cache_path = self._db = None  # an unusable file costs the disk cache, not the requests
        return self._db

    def _prune(self) -> None:
        if self._db is not None:
            self._db.execute("DELETE FROM embeddings WHERE created <= ?", (time.time() - self.ttl_seconds,))

    def _load_or_embed(self, key: str, text: str) -> tuple[float, list[float]]:
        now, db, row = time.time(), self._database(), None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):  # locked by another worker for too long: embed anyway
                row = db.execute("SELECT created, vector FROM embeddings WHERE key = ?", (key,)).fetchone()
        # The stored time, not now: TTL counts from the first embedding, across restarts.
        if row is not None and now - row[0] < self.ttl_seconds:
            return float(row[0]), np.frombuffer(row[1], dtype=np.float32).tolist()
        # float32 both ways, so a fresh vector and its cached copy are identical.
        vector = np.asarray(self.model.encode([text], normalize_embeddings=True)[0], dtype=np.float32)
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.execute("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", (key, now, vector.tobytes()))
                self._writes += 1
                if self._writes % 1000 == 0:  # expired rows would otherwise grow the file forever
                    self._prune()
        return now, vector.tolist()

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
        self.cache_path = self._db = None  # an embedding still queued must not reopen it

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.submit(self._close_db)
            self._pool.shutdown(wait=True)


class SemanticUnavailable(CacheUnavailable):
    """Chroma could not be reached or failed; treat it as a cache miss."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """An earlier question close enough to answer this one."""

    key: str
    similarity: float
    text: str


class SemanticIndex:
    """Cached questions in a Chroma collection: embedding -> exact cache key, filtered by metadata."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        path: str | None = None,
        host: str | None = None,
        port: int = 8000,
        collection: str = "fluido_semantic_cache",
        space: str = "cosine",
        m: int = 16,
        construction_ef: int = 100,
        search_ef: int = 64,
        timeout: float = 5.0,
    ) -> None:
        if space not in ("cosine", "l2", "ip"):
            raise ValueError(f"unknown space {space!r}")
        self.embedder = embedder
        self.path, self.host, self.port, self.name, self.space = path, host, port, collection, space
        self.hnsw: dict[str, Any] = {
            "space": space, "max_neighbors": m, "ef_construction": construction_ef, "ef_search": search_ef,
        }  # fmt: skip
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fluido-chroma")
        self._client: Any = None
        self._collection: Any = None

    def _connect(self) -> Any:
        """Blocking, in the worker: the client is made on first use, so start-up never waits on Chroma."""
        settings = Settings(anonymized_telemetry=False)
        if self._client is None:
            if self.host is not None:
                self._client = chromadb.HttpClient(host=self.host, port=self.port, settings=settings)
                for session in self._sessions():  # else a hung server would block the worker forever
                    session.timeout = httpx.Timeout(self.timeout)
            elif self.path is not None:
                self._client = chromadb.PersistentClient(path=self.path, settings=settings)
            else:
                self._client = chromadb.EphemeralClient(settings=settings)
        if self._collection is None:
            # embedding_function=None: we always pass vectors, and Chroma's default would download a model.
            self._collection = self._client.get_or_create_collection(
                self.name, configuration={"hnsw": self.hnsw}, embedding_function=None
            )
        return self._collection

    def _sessions(self) -> list[Any]:
        """The httpx sessions of Chroma 1.5's HTTP client and of its admin client, found through private
        attributes (harmlessly none if those change): Chroma opens them with timeout=None and never closes
        them."""
        owners = (self._client, getattr(self._client, "_admin_client", None))
        found = (getattr(getattr(owner, "_server", None), "_session", None) for owner in owners)
        return [session for session in found if isinstance(session, httpx.Client)]

    def _guarded(self, op: Callable[[Any], T]) -> T:
        """The one boundary where Chroma's exceptions become SemanticUnavailable, by type."""
        try:
            collection = self._connect()
        except (ChromaError, httpx.HTTPError, OSError, ValueError) as exc:
            # Client creation reports an unreachable server as a bare ValueError. A client that was made
            # is kept: httpx reconnects by itself once the server is back.
            raise SemanticUnavailable(str(exc)) from exc
        try:
            return op(collection)
        except Exception as exc:
            if isinstance(exc, NotFoundError):
                self._collection = None  # deleted behind our back (another purge): look it up again
            # The HTTP client raises a bare Exception for an error that is not Chroma's (a proxy's 502).
            if isinstance(exc, ChromaError | httpx.HTTPError | OSError) or type(exc) is Exception:
                raise SemanticUnavailable(str(exc)) from exc
            raise

    async def _run(self, op: Callable[[Any], T]) -> T:
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._guarded, op)
        try:
            # Client creation cannot be given a timeout, so the wait is bounded here as well.
            return await asyncio.wait_for(future, self.timeout * 2)
        except TimeoutError as exc:
            raise SemanticUnavailable("Chroma did not answer in time") from exc

    async def search(
        self, text: str, where: dict[str, str], threshold: float, limit: int = 3
    ) -> list[Candidate]:
        vector = await self.embedder.embed(text)
        found = await self._run(
            lambda c: c.query(
                query_embeddings=[vector],
                n_results=limit,
                where=_where(where),
                include=["documents", "distances"],
            )
        )
        out = []
        for key, document, distance in zip(
            found["ids"][0], found["documents"][0], found["distances"][0], strict=True
        ):
            # Unit vectors: Chroma's l2 is the squared distance, 2 - 2cos; cosine and ip give 1 - cos.
            similarity = min(1.0, 1.0 - distance / 2 if self.space == "l2" else 1.0 - distance)
            if similarity >= threshold and same_specifics(text, document):
                out.append(Candidate(key, float(similarity), document))
        return sorted(out, key=lambda c: c.similarity, reverse=True)

    async def add(self, key: str, text: str, metadata: dict[str, str]) -> None:
        vector = await self.embedder.embed(text)
        await self._run(
            lambda c: c.upsert(ids=[key], embeddings=[vector], documents=[text], metadatas=[metadata or None])
        )

    async def remove(self, key: str) -> None:
        await self._run(lambda c: c.delete(ids=[key]))

    async def purge(self, namespace: str | None) -> None:
        """Forget the entries whose ``namespace`` metadata is ``namespace``; None forgets everything."""
        if namespace is not None:
            await self._run(lambda c: c.delete(where={"namespace": namespace}))
        else:
            await self._run(self._recreate)

    def _recreate(self, collection: Any) -> None:
        self._client.delete_collection(self.name)
        self._collection = None
        self._connect()

    async def ping(self) -> None:
        await self._run(lambda c: self._client.heartbeat())

    def close(self) -> None:
        """Closes the client and the embedder too: the index owns the embedder it was given."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            sessions = self._sessions()
            self._client.close()  # releases the SQLite handles of an embedded Chroma
            for session in sessions:
                session.close()
        self.embedder.close()


def _where(where: dict[str, str]) -> dict[str, Any] | None:
    """All keys equal: Chroma wants one condition bare, several under $and, and none as no filter."""
    conditions = [{k: v} for k, v in where.items()]
    if len(conditions) > 1:
        return {"$and": conditions}
    return conditions[0] if conditions else None
