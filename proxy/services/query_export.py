"""Exporting MiniLM's ONNX graph for queries (``query_model.py``), in a process of its own.

``python -m proxy.services.query_export MODEL_DIR FILE`` loads the torch model, exports it, checks the
graph in ONNX Runtime against ``model.encode`` on ``SAMPLES`` (cosine >= 0.9999), and writes it with the
torch model's vectors of ``SAMPLES`` in its metadata. The file is written under a temporary name and
renamed, so replicas starting together never read half a file (each may export; the last rename wins, and
every one of them is a whole, checked graph). A server runs it with ``export_in_child``: torch, and what
the export leaves allocated, go away with the child.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from proxy.services.query_model import (
    MAX_PIECES,
    REFERENCE,
    SAMPLES,
    OnnxQueryModel,
    check,
    encode_reference,
    session_of,
    tokenizer_of,
)

TIMEOUT = 600.0  # seconds; an export takes a few on an idle machine


class ExportFailed(Exception):
    pass


def export(model: Any) -> bytes:
    """The sentence-transformers MiniLM ``model`` as an ONNX graph (bytes). Blocking, a few seconds."""
    import torch

    bert = model[0].auto_model

    class Sentence(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            tokens = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    # Traced on a padded batch of two, so the graph keeps the general masking path (not one specialised
    # to a mask of ones) and both axes stay dynamic.
    sample = model.tokenizer(["a short text", "a somewhat longer text, to pad the other"], padding=True,
                             return_tensors="pt")  # fmt: skip
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with tempfile.TemporaryDirectory(prefix="fluido-minilm-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it treats as constants
        path = Path(tmp) / "minilm.onnx"
        torch.onnx.export(
            Sentence().eval(), tuple(sample[n] for n in names), path, dynamo=False, opset_version=17,
            input_names=names, output_names=["vector"],
            dynamic_axes={**{n: {0: "batch", 1: "pieces"} for n in names}, "vector": {0: "batch"}},
        )  # fmt: skip
        return path.read_bytes()


def with_reference(graph: bytes, reference: np.ndarray, max_pieces: int) -> bytes:
    """``graph`` with the torch model's vectors of SAMPLES and its word-piece limit in its metadata."""
    import onnx

    proto = onnx.load_from_string(graph)
    onnx.helper.set_model_props(proto, {REFERENCE: encode_reference(reference), MAX_PIECES: str(max_pieces)})
    data: bytes = proto.SerializeToString()
    return data


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would keep other users' replicas from reading it
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_checked(model_dir: Path, path: Path) -> None:
    """Blocking, torch in this process: export, check and write the graph of the model in ``model_dir``."""
    if not (model_dir / "tokenizer.json").is_file():
        raise ExportFailed(f"no model in {model_dir} (no tokenizer.json)")
    from proxy.services.embedder import load_minilm

    model = load_minilm(model_dir)
    graph = export(model)
    reference = np.asarray(model.encode(list(SAMPLES), normalize_embeddings=True), dtype=np.float32)
    check(OnnxQueryModel(session_of(graph), tokenizer_of(model_dir, model.max_seq_length)), reference)
    write_atomically(path, with_reference(graph, reference, model.max_seq_length))


def export_in_child(model_dir: Path, path: Path) -> None:
    """``export_checked`` in a child process. Raises ``ExportFailed`` with the child's last words."""
    root = str(Path(__file__).resolve().parents[2])  # where the ``proxy`` package is, for the child
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "proxy.services.query_export", str(model_dir), str(path)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ExportFailed(f"the export took over {TIMEOUT:g} s") from exc
    if done.returncode != 0:
        words = done.stderr.decode(errors="replace").strip().splitlines()
        raise ExportFailed(words[-1] if words else f"the export exited with {done.returncode}")


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python -m proxy.services.query_export MODEL_DIR FILE")
    export_checked(Path(sys.argv[1]), Path(sys.argv[2]))


if __name__ == "__main__":
    main()
