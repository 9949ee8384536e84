"""``fluido ingest``: folders and JSONL into a store, idempotent, replacing what changed."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.serve import REPO
from tests.support.wait import until


def ingest(config: Path, *paths: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "ingest", "--config", str(config), "--store", "notes", *map(str, paths)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path, Path]:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "reactor.txt").write_text("The Zorblax reactor is cooled by liquid helium.")
    (folder / "sub" / "guide.md").write_text("# Guide\n\nBananas are rich in potassium.")
    (folder / "page.html").write_text(
        "<html><style>p{}</style><p>Marathons take months of training.</p></html>"
    )
    (folder / "ignored.bin").write_bytes(b"\x00\x01")
    records = tmp_path / "records.jsonl"
    lines = [
        {
            "_id": "doc-1",
            "title": "Glorpfish",
            "text": "Glorpfish live in the Quibble lagoon.",
            "metadata": {"year": 2020},
        },
        {"id": 7, "text": "Lentil soup is served on Tuesdays."},
    ]
    records.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    config = tmp_path / "fluido.toml"
    config.write_text(
        '[upstreams.x]\nkind = "openai"\nurl = "http://127.0.0.1:9/v1"\n'
        '[models.chat]\ntargets = [{ upstream = "x", model = "m" }]\n'
        f'[rag]\nenabled = true\npath = "{tmp_path / "rag"}"\n'
    )
    return config, folder, records


def report(out: str) -> dict[str, str]:
    return {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines() if line.strip()}


def test_ingest_loads_files_and_records_and_a_rerun_changes_nothing(corpus: tuple[Path, Path, Path]) -> None:
    config, folder, records = corpus
    first = report(ingest(config, folder, records))
    assert first["store"].startswith("vs_") and first["store"].endswith("(notes)")
    assert first["documents"] == "5 (5 new or changed, 0 unchanged)"
    assert int(first["chunks"]) == 5 and first["time"].endswith(" s")
    again = report(ingest(config, folder, records))
    assert again["store"] == first["store"]
    assert again["documents"] == "5 (0 new or changed, 5 unchanged)"
    (folder / "reactor.txt").write_text("The Zorblax reactor is now cooled by liquid nitrogen.")
    changed = report(ingest(config, folder, records))
    assert changed["documents"] == "5 (1 new or changed, 4 unchanged)" and changed["chunks"] == "5"


async def test_a_record_is_found_with_its_id_and_metadata(corpus: tuple[Path, Path, Path]) -> None:
    config, _, records = corpus
    ingest(config, records)
    from middleware.rag.factory import build_retrieval
    from proxy.config import load

    retrieval = build_retrieval(load(config).rag)
    try:
        store = await retrieval.resolve("notes")
        best = (await retrieval.search([store.id], "Where do glorpfish live?", 1))[0]
        assert best.file_id == "doc-1" and best.filename == "Glorpfish"
        assert best.attributes == {"_id": "doc-1", "title": "Glorpfish", "year": 2020}
        assert best.text.startswith("Glorpfish\n\nGlorpfish live")
    finally:
        await retrieval.close()


def test_a_bad_record_names_its_line(corpus: tuple[Path, Path, Path]) -> None:
    config, _, records = corpus
    records.write_text('{"_id": "a", "text": "fine"}\n{"title": "no id"}\n')
    done = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "ingest", "--config", str(config), "--store", "notes", str(records)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1 and f"{records}:2" in done.stderr


async def test_a_document_repeated_in_the_next_write_replaces_its_first_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes overlap (one is embedded while the one before it is written): a document in both must still
    end up once, as its later copy, with nothing left of the earlier one."""
    from middleware.rag import cli
    from middleware.rag.backend import chunks_collection
    from middleware.rag.config import RagConfig
    from middleware.rag.factory import build_retrieval

    monkeypatch.setattr(cli, "BATCH", 2)
    records = tmp_path / "records.jsonl"
    lines = [
        {"_id": "a", "text": "Glorpfish live in the Quibble lagoon."},
        {"_id": "b", "text": "Lentil soup is served on Tuesdays."},
        {"_id": "c", "text": "Marathons take months of training."},
        {"_id": "a", "text": "Glorpfish moved to the Zanzibar reef."},  # in the second write
    ]
    records.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    retrieval = build_retrieval(RagConfig(enabled=True, path=str(tmp_path / "rag")), bulk=True)
    try:
        report = await cli.ingest_paths(retrieval, "notes", [records])
        stored = await retrieval.backend.run(
            lambda b: b.collection(chunks_collection(report.store_id)).get(include=["documents"])
        )
    finally:
        await retrieval.close()
    assert (report.documents, report.changed, report.chunks) == (4, 4, 4)
    assert sorted(stored["documents"]) == [
        "Glorpfish moved to the Zanzibar reef.", "Lentil soup is served on Tuesdays.",
        "Marathons take months of training.",
    ]  # fmt: skip


class SlowStore:
    """Stands in for ``Retrieval``: write 1 fails once write 2 has started; the others wait (10 s at most)."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.cancelled: list[int] = []

    async def resolve(self, store: str) -> Any:
        return type("Store", (), {"id": "vs_1"})()

    async def ingest(self, store_id: str, docs: list[Any]) -> list[Any]:
        number = len(self.started) + 1
        self.started.append(number)
        try:
            if number == 1:
                await until(lambda: len(self.started) > 1)
                raise RuntimeError("Chroma said no")
            with contextlib.suppress(TimeoutError):  # never let go: a failure, not a hang
                await asyncio.wait_for(asyncio.Event().wait(), 10)
        except asyncio.CancelledError:
            self.cancelled.append(number)
            raise
        return []

    async def prepare(self, store_id: str) -> None:
        raise AssertionError("a failed ingest must not go on to build the index")


async def test_two_writes_are_in_flight_and_a_failed_one_stops_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from middleware.rag import cli

    monkeypatch.setattr(cli, "BATCH", 1)
    records = tmp_path / "records.jsonl"
    records.write_bytes(
        b"".join(orjson.dumps({"_id": str(i), "text": f"text {i}"}) + b"\n" for i in range(5))
    )
    store = SlowStore()
    with pytest.raises(RuntimeError, match="Chroma said no"):
        await cli.ingest_paths(store, "notes", [records])  # type: ignore[arg-type]
    # The second write started while the first was under way, no third started, and when the first
    # failed the second was cancelled.
    assert store.started == [1, 2] and store.cancelled == [2]
