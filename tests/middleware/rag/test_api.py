"""The vector store API through the official openai SDK, against a running Fluido."""

from __future__ import annotations

import io
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.vllm import FakeVLLM


def client(url: str, key: str = "sk-admin") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def upload(c: openai.OpenAI, name: str, text: str) -> str:
    return c.files.create(file=(name, io.BytesIO(text.encode()), "text/plain"), purpose="assistants").id


@pytest.fixture(scope="module")
def store(rag_fluido: tuple[str, FakeVLLM]) -> dict[str, Any]:
    """A store with three files, each with attributes, made through the SDK."""
    url, _ = rag_fluido
    c = client(url)
    vs = c.vector_stores.create(name="sdk-store", metadata={"owner": "tests"})
    files = {
        "reactor": upload(c, "reactor.txt", "The Zorblax reactor is cooled by liquid helium at four kelvin."),
        "bananas": upload(
            c, "bananas.md", "# Bananas\n\nBananas grow in tropical climates and are rich in potassium."
        ),
        "page": upload(
            c, "page.html", "<html><script>var x=1;</script><p>Marathon training takes months.</p></html>"
        ),
    }
    years = {"reactor": 2024, "bananas": 2019, "page": 2021}
    for name, file_id in files.items():
        made = c.vector_stores.files.create(
            vector_store_id=vs.id, file_id=file_id, attributes={"topic": name, "year": years[name]}
        )
        assert made.status == "completed" and made.vector_store_id == vs.id
    return {"id": vs.id, "files": files}


def test_the_sdk_creates_a_store_and_finds_it(
    rag_fluido: tuple[str, FakeVLLM], store: dict[str, Any]
) -> None:
    url, _ = rag_fluido
    c = client(url)
    got = c.vector_stores.retrieve(store["id"])
    assert got.name == "sdk-store" and got.metadata == {"owner": "tests"}
    assert got.file_counts.completed == got.file_counts.total == 3 and got.usage_bytes > 0
    assert store["id"] in [s.id for s in c.vector_stores.list()]
    listed = c.vector_stores.files.list(vector_store_id=store["id"])
    assert sorted(f.id for f in listed) == sorted(store["files"].values())


def test_search_returns_the_answering_file_with_its_attributes(
    rag_fluido: tuple[str, FakeVLLM], store: dict[str, Any]
) -> None:
    url, _ = rag_fluido
    page = client(url).vector_stores.search(
        vector_store_id=store["id"], query="What cools the Zorblax reactor?"
    )
    results = list(page)
    best = results[0]
    assert best.file_id == store["files"]["reactor"] and best.filename == "reactor.txt"
    assert best.attributes == {"topic": "reactor", "year": 2024}
    assert 0 < best.score <= 1 and "helium" in best.content[0].text and best.content[0].type == "text"
    assert len(results) <= 10


def test_html_is_indexed_as_its_visible_text(rag_fluido: tuple[str, FakeVLLM], store: dict[str, Any]) -> None:
    url, _ = rag_fluido
    best = next(
        iter(client(url).vector_stores.search(vector_store_id=store["id"], query="marathon training"))
    )
    assert best.filename == "page.html"
    assert best.content[0].text == "Marathon training takes months."


def test_filters_and_max_results_narrow_the_search(
    rag_fluido: tuple[str, FakeVLLM], store: dict[str, Any]
) -> None:
    url, _ = rag_fluido
    c = client(url)
    recent = c.vector_stores.search(
        vector_store_id=store["id"],
        query="Zorblax reactor helium",
        filters={"type": "lt", "key": "year", "value": 2022},
    )
    assert {r.attributes["topic"] for r in recent} <= {"bananas", "page"} and list(recent)
    either = c.vector_stores.search(
        vector_store_id=store["id"], query="anything", max_num_results=1,
        filters={"type": "or", "filters": [{"type": "eq", "key": "topic", "value": "page"},
                                           {"type": "eq", "key": "topic", "value": "bananas"}]},
    )  # fmt: skip
    assert len(list(either)) == 1


def test_a_score_threshold_drops_unrelated_files(
    rag_fluido: tuple[str, FakeVLLM], store: dict[str, Any]
) -> None:
    url, _ = rag_fluido
    c = client(url)
    everything = c.vector_stores.search(vector_store_id=store["id"], query="What cools the Zorblax reactor?")
    strict = c.vector_stores.search(
        vector_store_id=store["id"],
        query="What cools the Zorblax reactor?",
        ranking_options={"score_threshold": 0.5},
    )
    assert len(list(everything)) == 3
    assert [r.filename for r in strict] == ["reactor.txt"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"query": "x", "max_num_results": 51}, "max_num_results"),
        ({"query": ""}, "query"),
        ({"query": "x", "filters": {"type": "like", "key": "a", "value": 1}}, "filters"),
        ({"query": "x", "ranking_options": {"score_threshold": 2}}, "ranking_options"),
    ],
)
def test_bad_search_input_is_a_400_the_sdk_raises(
    rag_fluido: tuple[str, FakeVLLM], store: dict[str, Any], body: dict[str, Any], param: str
) -> None:
    url, _ = rag_fluido
    with pytest.raises(openai.BadRequestError) as caught:
        client(url).post(f"/vector_stores/{store['id']}/search", body=body, cast_to=object)
    assert caught.value.status_code == 400 and caught.value.body["param"].startswith(param)  # type: ignore[index]


def test_only_admin_keys_write(rag_fluido: tuple[str, FakeVLLM], store: dict[str, Any]) -> None:
    url, _ = rag_fluido
    reader = client(url, "sk-reader")
    with pytest.raises(openai.PermissionDeniedError):
        reader.vector_stores.create(name="not-allowed")
    with pytest.raises(openai.PermissionDeniedError):
        upload(reader, "x.txt", "nope")
    with pytest.raises(openai.PermissionDeniedError):
        reader.vector_stores.files.create(vector_store_id=store["id"], file_id=store["files"]["reactor"])
    # Positive control: the same key reads.
    assert list(reader.vector_stores.search(vector_store_id=store["id"], query="helium"))
    with pytest.raises(openai.AuthenticationError):
        client(url, "sk-wrong").vector_stores.list()


def test_a_key_reads_only_the_stores_it_is_given(
    rag_fluido: tuple[str, FakeVLLM], store: dict[str, Any]
) -> None:
    url, _ = rag_fluido
    narrow = client(url, "sk-narrow")  # [rag.readers] narrow = ["handbook"]
    with pytest.raises(openai.NotFoundError):
        narrow.vector_stores.search(vector_store_id=store["id"], query="helium")
    with pytest.raises(openai.NotFoundError):  # the store's check comes before the body's
        narrow.post(f"/vector_stores/{store['id']}/search", body={"query": ""}, cast_to=object)
    assert store["id"] not in [s.id for s in narrow.vector_stores.list()]
    handbook = client(url).vector_stores.create(name="handbook")
    try:
        assert list(narrow.vector_stores.search(vector_store_id=handbook.id, query="helium")) == []
    finally:
        client(url).vector_stores.delete(handbook.id)


def test_unknown_ids_are_404s(rag_fluido: tuple[str, FakeVLLM], store: dict[str, Any]) -> None:
    url, _ = rag_fluido
    c = client(url)
    with pytest.raises(openai.NotFoundError):
        c.vector_stores.retrieve("vs_missing")
    for body in ({"query": "helium"}, {"query": ""}):  # a missing store before a bad body
        with pytest.raises(openai.NotFoundError):
            c.post("/vector_stores/vs_missing/search", body=body, cast_to=object)
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve("file_missing")
    with pytest.raises(openai.NotFoundError):
        c.vector_stores.files.create(vector_store_id=store["id"], file_id="file_missing")


def test_deleting_a_file_removes_it_from_search(rag_fluido: tuple[str, FakeVLLM]) -> None:
    url, _ = rag_fluido
    c = client(url)
    vs = c.vector_stores.create(name="deletions")
    file_id = upload(c, "glorp.txt", "Glorpfish live only in the Quibble lagoon.")
    c.vector_stores.files.create(vector_store_id=vs.id, file_id=file_id)
    assert [
        r.file_id for r in c.vector_stores.search(vector_store_id=vs.id, query="Where do glorpfish live?")
    ] == [file_id]
    assert c.files.delete(file_id).deleted
    assert list(c.vector_stores.search(vector_store_id=vs.id, query="Where do glorpfish live?")) == []
    assert list(c.vector_stores.files.list(vector_store_id=vs.id)) == []
    assert c.vector_stores.delete(vs.id).deleted
    with pytest.raises(openai.NotFoundError):
        c.vector_stores.retrieve(vs.id)


def test_a_file_batch_attaches_several_files(rag_fluido: tuple[str, FakeVLLM]) -> None:
    url, _ = rag_fluido
    c = client(url)
    vs = c.vector_stores.create(name="batch")
    ids = [
        upload(c, f"n{i}.txt", f"Note number {i} mentions the colour {colour}.")
        for i, colour in enumerate(["red", "teal"])
    ]
    batch = c.vector_stores.file_batches.create_and_poll(vector_store_id=vs.id, file_ids=ids)
    assert batch.status == "completed" and batch.file_counts.completed == 2
    assert c.vector_stores.file_batches.retrieve(batch.id, vector_store_id=vs.id).id == batch.id
    assert c.vector_stores.retrieve(vs.id).file_counts.total == 2
    c.vector_stores.delete(vs.id)


def test_uploaded_content_reads_back_and_binary_is_refused(rag_fluido: tuple[str, FakeVLLM]) -> None:
    url, _ = rag_fluido
    c = client(url)
    file_id = upload(c, "hello.txt", "hello there")
    assert c.files.content(file_id).text == "hello there"
    assert c.files.retrieve(file_id).filename == "hello.txt"
    with pytest.raises(openai.BadRequestError):
        c.files.create(
            file=("x.bin", io.BytesIO(b"\xff\xfe\x00binary"), "application/octet-stream"),
            purpose="assistants",
        )
    r = httpx.post(
        f"{url}/v1/files", headers={"authorization": "Bearer sk-admin"}, files={"file": ("a.txt", b"x")}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
