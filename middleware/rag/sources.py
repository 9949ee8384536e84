"""Files on disk as documents for ``fluido ingest``: text, Markdown, HTML, and JSONL records.

A JSONL line ``{"_id" or "id", "title"?, "text", "metadata"?}`` is one document whose ``file_id`` is its
id; its ``_id`` and scalar metadata become chunk attributes, so search results name the document. Any
other file is one document identified by its absolute path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson

from middleware.rag.ingest import Document

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".text", ".rst"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
RECORD_SUFFIXES = frozenset({".jsonl", ".ndjson"})
SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | RECORD_SUFFIXES


class SourceError(Exception):
    """A file that cannot be read as a document."""


class _HTMLText(HTMLParser):
    """Visible text of a page: script and style dropped, blocks separated by newlines."""

    SKIP = frozenset({"script", "style", "noscript", "template"})
    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "pre"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_text(markup: str) -> str:
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _attribute(value: Any) -> str | int | float | bool:
    if isinstance(value, str | int | float | bool):
        return value
    return orjson.dumps(value).decode()  # Chroma metadata is flat: nested values travel as JSON text


def record_document(record: Any, where: str) -> Document:
    if not isinstance(record, dict):
        raise SourceError(f"{where}: a record must be a JSON object")
    doc_id = record.get("_id", record.get("id"))
    text = record.get("text")
    if not isinstance(doc_id, str | int) or isinstance(doc_id, bool) or str(doc_id) == "":
        raise SourceError(f'{where}: a record needs an "_id" or "id"')
    if not isinstance(text, str):
        raise SourceError(f'{where}: a record needs a "text" string')
    title = record.get("title")
    title = title if isinstance(title, str) else ""
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise SourceError(f'{where}: "metadata" must be an object')
    attributes = {str(k): _attribute(v) for k, v in metadata.items() if v is not None}
    attributes["_id"] = str(doc_id)
    if title:
        attributes.setdefault("title", title)
    body = f"{title}\n\n{text}" if title else text
    return Document(str(doc_id), title or str(doc_id), body, attributes)


def file_document(path: Path) -> Document:
    raw = path.read_text(encoding="utf-8", errors="replace")
    text = html_text(raw) if path.suffix.lower() in HTML_SUFFIXES else raw
    resolved = str(path.resolve())
    file_id = "path_" + hashlib.sha256(resolved.encode()).hexdigest()[:24]
    return Document(file_id, path.name, text, {"path": resolved})


def files_under(paths: list[Path]) -> list[Path]:
    """The readable files named or inside the folders named, in a stable order."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        elif path.is_file():
            out.append(path)
        else:
            raise SourceError(f"{path}: no such file or folder")
    return out


def documents(path: Path) -> Iterator[Document]:
    if path.suffix.lower() in RECORD_SUFFIXES:
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise SourceError(f"{path}:{number}: not JSON ({exc})") from exc
                yield record_document(record, f"{path}:{number}")
    else:
        yield file_document(path)
