"""`fashion-cir serve`'s JSON API through FastAPI's TestClient, on a small real index (tests/support/search_fixture.py):
answers agree with the engine, every bad request is a 4xx with one sentence and the server carries on, images are
reachable only by gallery name, and an oversized upload is refused without being read whole."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pipeline.paths import Paths
from pipeline.search.api.search_body import MAX_UPLOAD_BYTES
from pipeline.search.engine import MAX_K, SearchEngine
from pipeline.search.server import create_app

TEXT = "is red with long sleeves"
K_RANGE = f"k must be a whole number from 1 to {MAX_K}"  # the engine's limit, the server's too


@pytest.fixture(scope="module")
def engine(search_root: Path) -> SearchEngine:
    return SearchEngine.open(Paths(search_root))


@pytest.fixture(scope="module")
def app(search_root: Path, engine: SearchEngine) -> FastAPI:
    return create_app(Paths(search_root), engine)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


@pytest.fixture(scope="module")
def reference(search_root: Path) -> str:
    return str(pd.read_parquet(Paths(search_root).val_rankings)["reference"].iloc[0])


@pytest.fixture(scope="module")
def image_file(engine: SearchEngine, reference: str) -> Path:
    return Path(engine.gallery["path"].iat[engine.row_of[reference]])


def good_search(client: TestClient, reference: str, k: int = 3) -> dict:
    """A valid query; asserted to succeed, so calling it after a bad request shows the server is still fine."""
    answer = client.post("/api/search", data={"reference": reference, "text": TEXT, "k": str(k)})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["hits"]) == k
    return answer.json()


def test_the_page_and_its_assets_are_local(client: TestClient):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: the page works offline
    for asset, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        served = client.get(f"/static/{asset}")
        assert served.status_code == 200 and served.headers["content-type"].startswith(kind)
        assert "http://" not in served.text and "https://" not in served.text
    assert client.get("/static/..%2Fserver.py").status_code == 404
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["images"] == 75 and health["rankings"] is True


def test_search_by_name_gives_the_engines_answer(client: TestClient, engine: SearchEngine, reference: str):
    answer = good_search(client, reference, k=7)
    expected = engine.search(reference, TEXT, 7)
    assert answer["hits"][0]["name"] == expected.hits[0].name
    assert [hit["name"] for hit in answer["hits"]] == [hit.name for hit in expected.hits]
    assert reference not in [hit["name"] for hit in answer["hits"]]
    assert answer["query_text"] == expected.query_text and answer["query_text"].startswith("Is red with long sleeves. ")
    assert answer["milliseconds"] > 0 and answer["hits"][0]["rank"] == 1
    assert set(answer["hits"][0]) == {"rank", "name", "category", "score"}  # no filesystem paths leave the server
    assert len(good_search(client, reference, k=10)["hits"]) == 10  # k's default page size


def test_an_uploaded_image_is_searched_without_a_caption(client: TestClient, image_file: Path):
    answer = client.post("/api/search", data={"text": "is blue", "k": "4"},
                         files={"image": ("mine.png", image_file.read_bytes(), "image/png")})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["hits"]) == 4 and answer.json()["query_text"] == "Is blue"


def test_k_defaults_to_ten(client: TestClient, reference: str):
    answer = client.post("/api/search", data={"reference": reference, "text": TEXT})
    assert answer.status_code == 200 and len(answer.json()["hits"]) == 10


@pytest.mark.parametrize("data, upload, status, message", [
    ({"text": "   "}, None, 400, "the query is empty; give a text"),
    ({"k": "3"}, None, 400, "the query is empty; give a text"),
    ({"reference": "no-such-image", "text": TEXT}, None, 400, "no gallery image is named"),
    ({"reference": "{image_file}.png", "text": TEXT}, None, 400, "no gallery image is named"),  # not a gallery file
    ({"reference": "/etc/passwd", "text": TEXT}, None, 400, "no gallery image is named"),
    ({"text": TEXT}, b"not an image", 400, "not an image Pillow can read"),
    ({"text": TEXT}, b"", 400, "not an image Pillow can read"),
    ({"reference": "{reference}", "text": TEXT}, b"\x89PNG", 400, "give one reference"),
    ({"text": TEXT, "where": "colour = red"}, None, 400, "names an unknown column 'colour'"),
    ({"text": TEXT, "where": "category >= 3"}, None, 400, "compares 'category', which holds text"),
    ({"text": TEXT, "where": "category"}, None, 400, "is not one this search reads"),
    ({"reference": "{reference}", "text": TEXT, "k": "0"}, None, 400, K_RANGE),
    ({"reference": "{reference}", "text": TEXT, "k": str(MAX_K + 1)}, None, 400, K_RANGE),
    ({"reference": "{reference}", "text": TEXT, "k": "ten"}, None, 400, K_RANGE),
    ({"reference": "{reference}", "text": TEXT, "k": "-3"}, None, 400, K_RANGE),
])
def test_a_bad_search_is_one_sentence_and_the_server_carries_on(client: TestClient, reference: str,
                                                                 image_file: Path, data: dict, upload: bytes | None,
                                                                 status: int, message: str):
    form = {key: value.format(reference=reference, image_file=image_file) for key, value in data.items()}
    files = None if upload is None else {"image": ("upload.png", upload, "image/png")}
    answer = client.post("/api/search", data=form, files=files)
    assert answer.status_code == status and answer.headers["content-type"] == "application/json"
    assert list(answer.json()) == ["error"] and message in answer.json()["error"]
    assert answer.json()["error"].endswith(".") and "\n" not in answer.json()["error"]
    good_search(client, reference)


def test_a_gallery_image_is_found_by_every_name_a_shop_knows(client: TestClient, engine: SearchEngine, reference: str,
                                                              image_file: Path, search_root: Path, tmp_path: Path):
    """Its name, its file name (the products.csv value), its file's path under the gallery root, the repository,
    or absolute: the same image, with its category and caption; a copy of the file elsewhere is not it."""
    expected = good_search(client, reference)
    gallery_root = search_root / engine.description["gallery"]  # here outside the repository: an absolute path
    spellings = [image_file.name, str(image_file), str(image_file.relative_to(gallery_root))]
    for spelling in spellings:
        answer = good_search(client, spelling)
        assert answer["reference"] == reference and answer["filters"] == expected["filters"], spelling
        assert answer["hits"] == expected["hits"] and answer["query_text"] == expected["query_text"]
        if not Path(spelling).is_absolute():  # a URL path holds the relative ones
            shown = client.get(f"/images/{spelling}")
            assert shown.status_code == 200 and shown.content == image_file.read_bytes(), spelling
    copy = tmp_path / image_file.name
    copy.write_bytes(image_file.read_bytes())
    refused = client.post("/api/search", data={"reference": str(copy), "text": TEXT})
    assert refused.status_code == 400 and "no gallery image is named" in refused.json()["error"]


@pytest.mark.parametrize("url, message", [
    ("/api/gallery?category=shoes", "unknown category 'shoes'"),
    ("/api/gallery?offset=-1", "offset"),
    ("/api/gallery?limit=0", "limit"),
    ("/api/gallery?limit=many", "limit"),
    ("/api/queries?category=shoes", "unknown category 'shoes'"),
    ("/api/queries?limit=1000", "limit"),
])
def test_bad_listing_parameters_are_400_with_one_sentence(client: TestClient, reference: str, url: str,
                                                          message: str):
    answer = client.get(url)
    assert answer.status_code == 400 and message in answer.json()["error"]
    assert client.get("/api/gallery").status_code == 200
    good_search(client, reference)


@pytest.mark.parametrize("url", [
    "/images/..%2F..%2Fetc%2Fpasswd",
    "/images/../../etc/passwd",
    "/images/%2Fetc%2Fpasswd",
    "/images//etc/passwd",
    "/images/{image_file}",
    "/images/{parent}%2F{name}",
    "/images/no-such-image",
    "/images/",
])
def test_images_are_reachable_only_by_gallery_name(client: TestClient, reference: str, image_file: Path, url: str):
    answer = client.get(url.format(image_file=image_file, parent=image_file.parent, name=image_file.name))
    assert answer.status_code == 404 and "error" in answer.json()


def test_a_gallery_image_is_served_as_is(client: TestClient, reference: str, image_file: Path):
    answer = client.get(f"/images/{reference}")
    assert answer.status_code == 200 and answer.content == image_file.read_bytes()
    assert answer.headers["content-type"] == "image/png" and "max-age" in answer.headers["cache-control"]


@pytest.mark.parametrize("size", [MAX_UPLOAD_BYTES + 1, 2 * MAX_UPLOAD_BYTES])  # just over (parsed), far over
def test_an_upload_over_the_limit_is_413(client: TestClient, reference: str, size: int):
    big = b"\x89PNG" + bytes(size - 4)
    answer = client.post("/api/search", data={"text": TEXT}, files={"image": ("big.png", big, "image/png")})
    assert answer.status_code == 413 and "larger than 8 MB" in answer.json()["error"]
    good_search(client, reference)


def test_an_oversized_body_without_a_length_is_refused_while_reading(app: FastAPI):
    """A chunked upload that never ends: the app answers 413 after the limit, having read only that much."""
    head = (b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")
    chunk, pulled, sent = 1 << 20, [], []

    async def receive() -> dict:
        pulled.append(chunk)
        return {"type": "http.request", "body": head if len(pulled) == 1 else bytes(chunk), "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/search", "raw_path": b"/api/search", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"multipart/form-data; boundary=xyz")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert len(pulled) * chunk <= MAX_UPLOAD_BYTES + 2 * chunk  # stopped at the limit, not at the end


def test_the_gallery_filters_and_pages(client: TestClient, engine: SearchEngine, reference: str):
    everything = client.get("/api/gallery?limit=200").json()
    assert everything["total"] == len(engine.gallery) and everything["categories"] == ["dress", "shirt", "toptee"]
    dresses = client.get("/api/gallery?category=dress&limit=200").json()
    assert dresses["total"] == 25 and {item["category"] for item in dresses["items"]} == {"dress"}
    by_name = client.get(f"/api/gallery?q={reference.lower()}").json()
    assert reference in [item["name"] for item in by_name["items"]]
    caption_word = str(engine.gallery["caption"].iat[0]).split()[1]
    by_caption = client.get(f"/api/gallery?q={caption_word.upper()}&limit=200").json()
    assert 0 < by_caption["total"] and all(caption_word in item["caption"].lower() for item in by_caption["items"])
    pages = [client.get(f"/api/gallery?offset={offset}&limit=10").json()["items"] for offset in range(0, 80, 10)]
    assert [item["name"] for page in pages for item in page] == engine.gallery["name"].tolist()


def test_validation_queries_come_failures_first(client: TestClient, search_root: Path):
    rankings = pd.read_parquet(Paths(search_root).val_rankings)
    listing = client.get("/api/queries?limit=100").json()
    assert listing["available"] and listing["total"] == len(rankings)
    ranks = [item["target_rank"] for item in listing["items"]]
    severity = [rank or 1 << 30 for rank in ranks]
    assert severity == sorted(severity, reverse=True)
    assert listing["failures"] == sum(not 1 <= rank <= 10 for rank in ranks) > 0
    for item in listing["items"]:
        assert len(item["top"]) == 10 and item["hit"] == (item["target"] in [hit["name"] for hit in item["top"]])
    shirts = client.get("/api/queries?category=shirt&offset=1&limit=2").json()
    assert [item["category"] for item in shirts["items"]] == ["shirt", "shirt"]
    assert shirts["total"] == int((rankings["category"] == "shirt").sum())


def test_missing_rankings_are_a_sentence_not_a_failure(engine: SearchEngine, tmp_path: Path):
    listing = TestClient(create_app(Paths(tmp_path), engine)).get("/api/queries").json()
    assert listing["available"] is False and "run `dvc repro`" in listing["message"]


def test_unknown_pages_and_methods_are_json(client: TestClient):
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and "error" in missing.json()
    wrong = client.get("/api/search")
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_the_page_code_is_served_revalidated_and_never_sniffed(client: TestClient):
    served = client.get("/static/app.js")
    assert served.headers["cache-control"] == "no-cache" and served.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/app.js", headers={"if-none-match": served.headers["etag"]}).status_code == 304


def test_recall_in_context_is_served_with_the_stage1_baseline_and_chance(client: TestClient, search_root: Path):
    answer = client.get("/api/recall").json()
    assert answer["available"] is True and answer["small_chance_r10"] == 50.0
    context = answer["context"]
    assert context == json.loads(Paths(search_root).eval_context.read_text())
    categories = [name for name in context if name != "average"]
    assert sorted(categories) == ["dress", "shirt", "toptee"]
    for name in categories:
        assert context[name]["gallery"] > 0 and 0 < context[name]["chance"]["R@10"] <= 100
        assert set(context[name]["stage1_sum"]) == {"R@10", "R@50"}


def test_without_an_evaluation_or_plots_the_page_says_what_to_run(engine: SearchEngine, tmp_path: Path):
    client = TestClient(create_app(Paths(tmp_path), engine))
    recall = client.get("/api/recall").json()
    assert recall["available"] is False and "run `dvc repro`" in recall["message"]
    missing = client.get("/training/")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no training plots here; run `fashion-cir plots` (after `dvc repro`)."}
    Paths(tmp_path).plots_report.mkdir(parents=True)
    (Paths(tmp_path).plots_report / "index.html").write_text("<html>plots</html>")
    assert client.get("/training/").text == "<html>plots</html>"
    assert client.get("/training/../../dvc.yaml").status_code == 404


def test_k_above_the_engines_limit_is_one_sentence(client: TestClient, reference: str):
    """The largest k is the engine's MAX_K, in the JSON body and the form alike; MAX_K itself is answered."""
    for answer in (client.post("/api/search", json={"text": TEXT, "k": MAX_K + 1}),
                   client.post("/api/search", data={"text": TEXT, "k": str(MAX_K + 1)})):
        assert answer.status_code == 400 and list(answer.json()) == ["error"], answer.text
        error = answer.json()["error"]
        assert str(MAX_K) in error and error.endswith(".") and "\n" not in error
    assert client.post("/api/search", json={"text": TEXT, "k": MAX_K}).status_code == 200


def test_every_json_route_has_a_typed_answer_in_the_openapi_schema(client: TestClient):
    """Each operation's 200 answer is a named model (or a choice of them), every error is the one-sentence
    ErrorAnswer, and no 422 is promised: a request that fails validation is a 400."""
    schema = client.get("/openapi.json").json()
    routes = {(path, method) for path, operations in schema["paths"].items() for method in operations}
    assert {("/health", "get"), ("/ready", "get"), ("/api/search", "post"), ("/api/filters", "get"),
            ("/api/gallery", "get"), ("/api/queries", "get"), ("/api/recall", "get")} <= routes
    error = "#/components/schemas/ErrorAnswer"
    for path, method in routes:
        responses = schema["paths"][path][method]["responses"]
        assert "422" not in responses, path
        content = responses["200"]["content"]
        if "application/json" in content:
            answer = content["application/json"]["schema"]
            named = [answer] if "$ref" in answer else answer.get("anyOf", [])
            assert named and all(option["$ref"].startswith("#/components/schemas/") for option in named), path
        for status, response in responses.items():
            if status != "200":
                assert response["content"]["application/json"]["schema"] == {"$ref": error}, (path, status)
    assert {"400", "401", "413", "default"} <= set(schema["paths"]["/api/search"]["post"]["responses"])
    assert "503" in schema["paths"]["/ready"]["get"]["responses"]
