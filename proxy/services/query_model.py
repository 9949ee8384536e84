"""all-MiniLM-L6-v2 for one text at a time (a query), in ONNX Runtime.

A query is ~20 word pieces. sentence-transformers' ``encode`` around torch costs more than the model's
arithmetic on so few: measured on this project's 2 Zen 4 cores, one SciFact claim (22 word pieces) took
~13 ms of CPU through ``encode`` under bfloat16 autocast, ~15 ms in float32, ~12 ms calling the torch
model directly in bfloat16, and ~6 ms here (float32; the gap holds whether the machine is idle or busy).

The graph is exported when the embedder loads, from the torch model already in memory: tokenizer ids ->
BERT -> mean over the tokens -> unit length, the bundled model's own pipeline (``modules.json``: mean
pooling, normalize), so the vectors are the model's in float32. Before it is used the export is checked
against the torch model on sample texts, one of them longer than the model reads (cosine >= 0.9999, in
practice 0.999999+); if it cannot be made or does not match, single texts keep the torch path.

The tokenizer is the bundled ``tokenizer.json`` with its padding removed and its truncation set to the
model's ``max_seq_length``: as shipped, the file pads and truncates every text to 128 word pieces, which
both slows a query ~3x and (with the padding counted in the mean) gives other vectors.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import structlog

log = structlog.get_logger("fluido.embedder")
MATCH = 0.9999  # least cosine to the torch model's vector for the export to be used
SAMPLES = (
    "Vitamin D supplementation reduces the risk of respiratory infections in children.",
    "ok",
    "BRCA1 mutations increase the lifetime risk of breast and ovarian cancer. " * 30,  # past 256 pieces
)


class OnnxQueryModel:
    """One text to its unit float32 vector; blocking, one thread."""

    def __init__(self, session: Any, tokenizer: Any) -> None:
        self.session = session
        self.tokenizer = tokenizer

    def encode(self, text: str) -> np.ndarray:
        ids = np.asarray([self.tokenizer.encode(text).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        vector: np.ndarray = self.session.run(None, feeds)[0][0]
        return vector


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


def session_of(graph: bytes) -> Any:
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


def load_query_model(model: Any, model_dir: Path) -> OnnxQueryModel | None:
    """The ONNX twin of ``model`` (loaded from ``model_dir``), or None when it cannot be made or does not
    give ``model``'s vectors (then single texts go through ``model.encode``)."""
    try:
        fast = OnnxQueryModel(session_of(export(model)), tokenizer_of(model_dir, model.max_seq_length))
        want = np.asarray(model.encode(list(SAMPLES), normalize_embeddings=True), dtype=np.float32)
        got = np.stack([fast.encode(text) for text in SAMPLES])
    except Exception as exc:  # no onnx package, an exporter or runtime error: torch stays in use
        log.warning("query_model_unavailable", error=str(exc) or type(exc).__name__)
        return None
    cosine = float((got * want).sum(axis=1).min())
    if cosine < MATCH:
        log.warning("query_model_mismatch", cosine=round(cosine, 6))
        return None
    return fast
