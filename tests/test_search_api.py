"""The typed search API on a small real index (tests/support/search_fixture.py), its vectors in FAISS and in Milvus
Lite: three kinds of query, filters, JSON and form bodies, the OpenAPI schema, images refused by their header's
pixel count, and concurrent queries answered in batches with the answers one by one would give."""

from __future__ import annotations

import struct
import threading
import zlib
from pathlib import Path

import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pipeline.errors import PipelineError
from pipeline.paths import Paths
from pipeline.search.batching import QueryBatcher
from pipeline.search.engine import MAX_PIXELS, Query, SearchEngine
from pipeline.search.server import create_app


@pytest.fixture(scope="module", params=["faiss", "milvus"])
def search_root(request: pytest.FixtureRequest) -> Path:
    """The same gallery with its vectors in a FAISS file or in a Milvus Lite collection: every test runs on both."""
    return request.getfixturevalue("search_root" if request.param == "faiss" else "milvus_search_root")


@pytest.fixture(scope="module")
def engine(search_root: Path) -> SearchEngine:
    return SearchEngine.open(Paths(search_root))


@pytest.fixture(scope="module")
def client(search_root: Path, engine: SearchEngine) -> TestClient:
    return TestClient(create_app(Paths(search_root), engine))


@pytest.fixture(scope="module")
def reference(search_root: Path) -> str:
    return str(pd.read_parquet(Paths(search_root).val_rankings)["reference"].iloc[0])


def category_of(engine: SearchEngine, name: str) -> str:
    return str(engine.gallery["category"].iat[engine.row_of[name]])


def test_a_text_query_searches_every_category(client: TestClient, engine: SearchEngine):
    answer = client.post("/api/search", json={"text": "a red dress", "k": 20}).json()
    assert answer["kind"] == "text" and answer["reference"] == "" and answer["filters"] == []
    assert answer["query_text"] == "a red dress" and len(answer["hits"]) == 20
    assert len({hit["category"] for hit in answer["hits"]}) > 1
    expected = engine.search(None, "a red dress", 20)
    assert [hit["name"] for hit in answer["hits"]] == [hit.name for hit in expected.hits]


def test_an_image_query_finds_more_like_it_in_its_category(client: TestClient, engine: SearchEngine, reference: str):
    answer = client.post("/api/search", data={"reference": reference, "k": "5"}).json()
    category = category_of(engine, reference)
    assert answer["kind"] == "image" and answer["text"] == "" and answer["query_text"] == ""
    assert answer["filters"] == [f"category = {category}"]
    assert len(answer["hits"]) == 5 and {hit["category"] for hit in answer["hits"]} == {category}
    assert reference not in [hit["name"] for hit in answer["hits"]]
    scores = [hit["score"] for hit in answer["hits"]]
    assert scores == sorted(scores, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in scores)


def test_every_category_and_filters(client: TestClient, engine: SearchEngine, reference: str):
    category = category_of(engine, reference)
    everywhere = client.post("/api/search", json={"reference": reference, "text": "is blue", "k": 74,
                                                  "every_category": True}).json()
    assert everywhere["filters"] == [] and len({hit["category"] for hit in everywhere["hits"]}) == 3
    other = next(c for c in ("dress", "shirt", "toptee") if c != category)
    narrowed = client.post("/api/search", data={"reference": reference, "text": "is blue", "k": "100",
                                                "where": [f"category = {other}"]}).json()
    assert narrowed["filters"] == [f"category = {other}"]  # a filter on the category replaces the reference's
    assert {hit["category"] for hit in narrowed["hits"]} == {other}
    assert len(narrowed["hits"]) == int((engine.gallery["category"] == other).sum())  # all of them, none missing


def test_the_json_body_is_validated_with_one_sentence(client: TestClient):
    for body, message in (({"text": "red", "k": 0}, "k: Input should be greater than or equal to 1"),
                          ({"text": "red", "where": "colour = red"}, "where: Input should be a valid array"),
                          ({"text": ""}, "the query is empty"),
                          ({"reference": "nothing", "text": "red"}, "no gallery image is named 'nothing'")):
        answer = client.post("/api/search", json=body)
        assert answer.status_code == 400 and message in answer.json()["error"], answer.text
    broken = client.post("/api/search", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"].endswith(".")


def test_the_openapi_schema_says_what_a_backend_needs(client: TestClient):
    schema = client.get("/openapi.json").json()
    search = schema["paths"]["/api/search"]["post"]
    assert set(search["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    form = search["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert form["image"]["format"] == "binary" and {"text", "reference", "k", "where", "every_category"} <= set(form)
    answer = schema["components"]["schemas"]["SearchAnswer"]
    assert set(answer["required"]) >= {"kind", "hits", "filters"}
    score = schema["components"]["schemas"]["SearchHit"]["properties"]["score"]["description"]
    assert "from -1 to 1" in score and "threshold does not mean the same across models" in score
    assert {"400", "413"} <= set(search["responses"])


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` (no pixel data): tiny, but huge to decode."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [12_000, 20_000])  # over our limit; over Pillow's own bomb limit too
def test_an_image_with_too_many_pixels_is_refused_by_its_header(client: TestClient, side: int):
    answer = client.post("/api/search", data={"text": "is red"},
                         files={"image": ("big.png", png_header(side, side), "image/png")})
    assert answer.status_code == 400, answer.text
    assert f"more than the {MAX_PIXELS // 1_000_000} million pixels this search decodes" in answer.json()["error"]


def test_concurrent_queries_are_answered_in_batches_as_one_by_one(engine: SearchEngine, reference: str):
    """The worker is held on its first batch while 15 more queries arrive: they are answered as one batch of 15,
    each answer the one the engine gives that query alone; a bad query fails alone."""

    class Held:  # the engine, its first batch held until the others have arrived
        def __init__(self) -> None:
            self.release, self.calls = threading.Event(), []

        def search_many(self, queries: list[Query], phases: dict[str, float] | None = None):
            self.calls.append(len(queries))
            self.release.wait(timeout=30)
            return engine.search_many(queries, phases)

    held = Held()
    batcher = QueryBatcher(lambda: held)  # type: ignore[arg-type,return-value]
    queries = [Query(reference, "is red", 3), Query(None, "a blue shirt", 4), Query(reference, "", 2),
               Query(None, "", 2)] * 4
    futures = [batcher.submit(queries[0])]
    while not held.calls:
        threading.Event().wait(0.01)
    futures += [batcher.submit(query) for query in queries[1:]]
    held.release.set()
    for query, future in zip(queries, futures, strict=True):
        if not query.text and query.image is None:
            assert isinstance(future.exception(timeout=30), PipelineError)
            continue
        alone = engine.search(query.image, query.text, query.k)
        assert [hit.name for hit in future.result(timeout=30).hits] == [hit.name for hit in alone.hits]
    assert held.calls == [1, 15] and batcher.largest == 15 and batcher.queries == 16


def test_the_app_answers_through_its_batcher(search_root: Path, engine: SearchEngine, reference: str):
    app: FastAPI = create_app(Paths(search_root), engine)
    client = TestClient(app)
    assert client.post("/api/search", json={"reference": reference, "text": "is red"}).status_code == 200
    health = client.get("/health").json()
    assert health["batches"]["queries"] >= 1 and health["max_pixels"] == MAX_PIXELS
