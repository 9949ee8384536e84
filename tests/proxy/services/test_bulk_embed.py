"""Bulk embedding: length-sorted batches run as whole forward passes on several worker threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from proxy.services.bulk_embed import BulkEncoder
from proxy.services.embedder import Embedder, bundled_minilm_path, load_minilm
from tests.support.wait import until

TEXTS = [
    "Vitamin D supplementation reduces the risk of respiratory infections in children.",
    "ok",
    "BRCA1 mutations increase the lifetime risk of breast and ovarian cancer. " * 30,  # past 256 pieces
    "The Zorblax reactor is cooled by liquid helium at four kelvin.",
    "",
    "naïve café, 東京, ☃",
    "Marathons take months of training.",
]


def tokenizer() -> Any:
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(str(bundled_minilm_path() / "tokenizer.json"))
    t.enable_truncation(max_length=256)
    t.no_padding()
    return t


class FakeForward:
    """Stands in for the model: row i's vector is (word pieces, first piece after [CLS], 1, 1). Records
    each call's thread, torch threads and autocast state. Calls from number ``hold_from`` on (1 is the
    first) wait until ``gate`` is set; call number ``fail_on_call`` raises."""

    def __init__(self, hold_from: int | None = None, fail_on_call: int | None = None) -> None:
        self.calls: list[tuple[str, int, bool]] = []
        self.running = 0
        self.most_at_once = 0
        self.gate = threading.Event()
        self.hold_from = hold_from
        self.fail_on_call = fail_on_call
        self._lock = threading.Lock()

    def __call__(self, features: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        with self._lock:
            self.calls.append(
                (threading.current_thread().name, torch.get_num_threads(), torch.is_autocast_enabled("cpu"))
            )
            call = len(self.calls)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            if self.hold_from is not None and call >= self.hold_from:
                assert self.gate.wait(10), "the test never opened the gate"
            if call == self.fail_on_call:
                raise RuntimeError("boom")
            lengths = features["attention_mask"].sum(dim=1).float()
            first = features["input_ids"][:, 1].float()
            ones = torch.ones_like(lengths)
            return {"sentence_embedding": torch.stack([lengths, first, ones, ones], dim=1)}
        finally:
            with self._lock:
                self.running -= 1


async def test_each_text_gets_its_own_row_back_in_order() -> None:
    encoder = BulkEncoder(FakeForward(), tokenizer(), workers=2)
    try:
        out = await encoder.encode(TEXTS, batch_size=2)
    finally:
        encoder.close()
    for text, row in zip(TEXTS, out, strict=True):
        ids = tokenizer().encode(text).ids
        expected = np.array([len(ids), ids[1], 1, 1], dtype=np.float32)
        assert np.allclose(row, expected / np.linalg.norm(expected), atol=1e-6)


def test_batches_go_longest_first_each_padded_to_its_own_longest() -> None:
    encoder = BulkEncoder(FakeForward(), tokenizer(), workers=1)
    try:
        batches = encoder.batches(TEXTS, batch_size=3)
    finally:
        encoder.close()
    lengths = [len(tokenizer().encode(t).ids) for t in TEXTS]
    assert sorted(r for rows, _ in batches for r in rows) == list(range(len(TEXTS)))
    widths = [features["input_ids"].shape[1] for _, features in batches]
    assert widths == sorted(widths, reverse=True) and widths[0] == 256  # truncated at the model's limit
    for rows, features in batches:
        assert features["input_ids"].shape[1] == max(lengths[r] for r in rows)
        assert features["attention_mask"].sum(dim=1).tolist() == [lengths[r] for r in rows]
        assert not features["token_type_ids"].any()


async def test_two_workers_run_two_batches_at_once_each_on_one_torch_thread() -> None:
    forward = FakeForward(hold_from=1)
    encoder = BulkEncoder(forward, tokenizer(), workers=2)
    try:
        task = asyncio.ensure_future(encoder.encode(TEXTS, batch_size=2))
        await until(lambda: forward.running == 2)  # both workers are inside a forward pass at once
        forward.gate.set()
        await task
    finally:
        encoder.close()
    assert forward.most_at_once == 2 and len(forward.calls) == 4
    assert {name for name, _, _ in forward.calls} == {"fluido-embed-bulk_0", "fluido-embed-bulk_1"}
    assert {threads for _, threads, _ in forward.calls} == {1}


@pytest.mark.parametrize(("precision", "autocast"), [("bfloat16", True), ("float32", False)])
async def test_workers_run_under_autocast_only_for_bfloat16(precision: str, autocast: bool) -> None:
    forward = FakeForward()
    encoder = BulkEncoder(forward, tokenizer(), workers=2, precision=precision)
    try:
        await encoder.encode(TEXTS, batch_size=2)
    finally:
        encoder.close()
    assert {on for _, _, on in forward.calls} == {autocast}


async def test_a_failed_batch_fails_the_call_and_the_batches_not_started_never_run() -> None:
    texts = TEXTS * 4  # 28 texts, 14 batches of 2
    forward = FakeForward(hold_from=3, fail_on_call=2)
    encoder = BulkEncoder(forward, tokenizer(), workers=1)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            await encoder.encode(texts, batch_size=2)
        forward.gate.set()  # the batch the worker may have taken meanwhile finishes
        again = await encoder.encode(TEXTS, batch_size=2)  # the workers serve the next call
    finally:
        encoder.close()
    # The call that failed ran its batches up to the failure, plus at most the one its worker had already
    # taken (of 14); the next call's 4 batches all ran.
    assert 2 + 4 <= len(forward.calls) <= 3 + 4
    assert again.shape == (len(TEXTS), 4)


async def test_a_cancelled_call_drops_the_batches_not_started() -> None:
    texts = TEXTS * 4
    forward = FakeForward(hold_from=1)
    encoder = BulkEncoder(forward, tokenizer(), workers=2)
    try:
        task = asyncio.ensure_future(encoder.encode(texts, batch_size=2))
        await until(lambda: forward.running == 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        forward.gate.set()  # the two batches under way finish; nothing else starts
    finally:
        encoder.close()
    assert len(forward.calls) == 2  # of 14


async def test_a_call_with_no_texts_runs_nothing() -> None:
    forward = FakeForward()
    encoder = BulkEncoder(forward, tokenizer(), workers=2)
    try:
        out = await encoder.encode([], batch_size=2)
    finally:
        encoder.close()
    assert out.shape[0] == 0 and forward.calls == []


@pytest.fixture(scope="module")
def minilm() -> Any:
    return load_minilm()


def test_the_batches_are_tokenized_as_the_model_itself_does(minilm: Any) -> None:
    encoder = BulkEncoder.for_model(minilm, workers=1, precision="float32")
    try:
        batches = encoder.batches(TEXTS, batch_size=3)
    finally:
        encoder.close()
    for rows, features in batches:
        own = minilm.preprocess([TEXTS[r] for r in rows])
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            assert own[key].tolist() == features[key].tolist(), key


@pytest.mark.parametrize(("precision", "tolerance"), [("float32", 1e-5), ("bfloat16", 2e-3)])
async def test_parallel_vectors_are_the_serial_encoders(
    minilm: Any, precision: str, tolerance: float
) -> None:
    texts = TEXTS * 3
    serial = Embedder(minilm, precision=precision)
    one, two = (BulkEncoder.for_model(minilm, workers, precision) for workers in (1, 2))
    try:
        want = serial.encode(texts, 4)
        got_one = await one.encode(texts, 4)
        got_two = await two.encode(texts, 4)
    finally:
        for closing in (serial, one, two):
            closing.close()
    assert np.array_equal(got_one, got_two)  # the same batches, whichever worker ran them
    assert np.allclose(got_two, want, atol=tolerance)
    assert (got_two * want).sum(axis=1).min() >= 0.9999
