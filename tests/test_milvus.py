"""The Milvus backend (index.backend: milvus) against its embedded store, Milvus Lite: filters mean there what they
mean over FAISS, its answers equal FAISS flat's on a shop's catalogue, and the collection follows the gallery's
changes by product id (upserts and deletes, never a rebuild)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import IndexParams, Params
from pipeline.errors import PipelineError
from pipeline.paths import Paths
from pipeline.search import milvus_index
from pipeline.search.engine import SearchEngine
from pipeline.search.filters import GalleryFilter, parse_where
from pipeline.search.milvus_index import MilvusVectors, connect, location, sync
from tests.support.search_fixture import rebuilt_with, shop_data


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def products(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A gallery table with a text column (mixed case and spaces), a numeric one with gaps, a column that mixes
    numbers and text, and random features."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({
        "name": [f"p{seed}-{i}" for i in range(n)],
        "category": rng.choice(["dress", "shirt", "toptee"], n),
        "colour": rng.choice(["Red", " blue", "GREEN ", "navy blue"], n),
        "price": [("" if rng.random() < 0.1 else str(int(v))) for v in rng.integers(5, 100, n)],
        "size": rng.choice(["10", "12", "xl", "m"], n),
    })
    return table, unit(rng.standard_normal((n, 16)))


def stored(table: pd.DataFrame, features: np.ndarray, root: Path, settings: IndexParams) -> MilvusVectors:
    columns = ["category", "colour", "price", "size"]
    manifest, _ = sync(table, features, columns, settings, Paths(root))
    return MilvusVectors.open(manifest, Paths(root), table["name"].tolist())


FILTERS = [["colour = red"], ["colour = Navy Blue"], ["colour != blue"], ["colour in (green, red)"],
           ["colour not in (red, blue)"], ["price <= 40"], ["price > 90"], ["price = 37"], ["price != 37"],
           ["price in (10, 20, 30)"], ["size = 10"], ["size in (xl, 12)"], ["size not in (m)"],
           ["category = shirt", "price >= 50", "colour != green"], ["colour = purple"]]


def test_every_filter_allows_in_milvus_the_rows_it_allows_over_faiss(tmp_path: Path):
    table, features = products(300, seed=1)
    vectors = stored(table, features, tmp_path, IndexParams(backend="milvus"))
    allows = GalleryFilter(table[["category", "colour", "price", "size"]])
    for filters in FILTERS:
        conditions = [parse_where(text) for text in filters]
        expected = set(np.flatnonzero(allows.allowed(conditions)))
        _, rows = vectors.search(features[:2], len(table), conditions)
        for row in rows:
            assert set(row[row >= 0]) == expected, filters
    assert expected == set()  # the last filter matches nothing, and nothing comes back


def test_the_collection_follows_the_gallery_by_product_id(tmp_path: Path):
    table, features = products(200, seed=2)
    settings, paths = IndexParams(backend="milvus"), Paths(tmp_path)
    columns = ["category", "colour", "price", "size"]
    _, first = sync(table, features, columns, settings, paths)
    assert first == {"upserted": 200, "deleted": 0, "recreated": 1}
    held = connect(location(settings.uri, paths))
    held.release_collection(settings.collection)  # as the next run's process finds it: written, not loaded
    held.close()
    added, added_features = products(50, seed=3)
    kept = table.iloc[20:].copy()
    kept.loc[kept.index[0], "colour"] = "red"  # one product's attribute changed, its image not
    changed = pd.concat([kept, added], ignore_index=True)
    changed_features = np.concatenate([features[20:], added_features])
    manifest, second = sync(changed, changed_features, columns, settings, paths)
    assert second == {"upserted": 51, "deleted": 20, "recreated": 0} and manifest["entities"] == 230
    vectors = MilvusVectors.open(manifest, paths, changed["name"].tolist())
    _, rows = vectors.search(added_features, 1, [])
    assert rows[:, 0].tolist() == list(range(180, 230))  # each new product is its own nearest
    _, rows = vectors.search(features[:20], 230, [])
    assert (rows >= 0).all()  # every hit is a current product: the removed never come back
    _, red = vectors.search(features[:1], 230, [parse_where("colour = red")])
    assert 0 in red[0].tolist()
    assert sync(changed, changed_features, columns, settings, paths)[1]["upserted"] == 0


def test_a_sync_diffs_against_what_it_wrote_unless_the_collection_changed_behind_it(tmp_path: Path, monkeypatch):
    table, features = products(100, seed=9)
    settings, paths = IndexParams(backend="milvus"), Paths(tmp_path)
    columns = ["category", "colour", "price", "size"]
    sync(table, features, columns, settings, paths)
    reads = []
    read_back = milvus_index._stored_keys
    monkeypatch.setattr(milvus_index, "_stored_keys", lambda *args: reads.append(args) or read_back(*args))
    changed = table.assign(colour=["red"] + table["colour"].tolist()[1:])
    assert sync(changed, features, columns, settings, paths)[1] == {"upserted": 1, "deleted": 0, "recreated": 0}
    assert reads == []  # the diff came from what the last sync wrote
    held = connect(location(settings.uri, paths))
    held.delete(settings.collection, ids=[str(changed["name"].iloc[5])])  # behind the stage's back
    held.close()
    manifest, report = sync(changed, features, columns, settings, paths)
    assert len(reads) == 1 and report == {"upserted": 1, "deleted": 0, "recreated": 0}
    assert manifest["entities"] == 100


def test_an_approximate_index_against_the_exact_one(tmp_path: Path):
    """The same collection, its vector index rebuilt in place: HNSW finds the exact top 10; IVF_FLAT is really
    built with index.nlist lists and searched with index.nprobe (all lists: exact; one list: far from it)."""
    table, features = products(2000, seed=4)
    queries = unit(features[:100] + 0.3 * np.random.default_rng(5).standard_normal((100, 16)))
    exact = stored(table, features, tmp_path, IndexParams(backend="milvus"))
    _, truth = exact.search(queries, 10, [])
    exact.client.close()

    def recall(settings: IndexParams) -> float:
        approximate = stored(table, features, tmp_path, settings)
        _, found = approximate.search(queries, 10, [])
        approximate.client.close()
        return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))

    assert recall(IndexParams(backend="milvus", kind="hnsw")) >= 0.99
    assert recall(IndexParams(backend="milvus", kind="ivf", nlist=16, nprobe=16)) == 1.0
    assert recall(IndexParams(backend="milvus", kind="ivf", nlist=16, nprobe=1)) < 0.8


def test_milvus_answers_as_faiss_flat_on_a_shops_catalogue(shop_search_root: Path, milvus_shop_root: Path):
    faiss_engine, milvus_engine = SearchEngine.open(Paths(shop_search_root)), SearchEngine.open(Paths(milvus_shop_root))
    assert milvus_engine.description["backend"] == "milvus" and faiss_engine.description["backend"] == "faiss"
    gallery = faiss_engine.gallery
    reference, colour = str(gallery["name"].iat[0]), str(gallery["colour"].iat[5])
    for image, text, where in ((reference, "is blue", ()), (None, "a red dress", ()), (reference, "", ()),
                               (None, "a shirt", (f"colour = {colour}",)), (reference, "is red", ("price <= 40",)),
                               (None, "striped", ("pattern != plain", "price > 30"))):
        expected, got = faiss_engine.search(image, text, 10, where), milvus_engine.search(image, text, 10, where)
        assert [h.name for h in got.hits] == [h.name for h in expected.hits], (image, text, where)
        assert np.allclose([h.score for h in got.hits], [h.score for h in expected.hits], atol=1e-4)


def test_bad_settings_are_one_sentence(tmp_path: Path):
    with pytest.raises(ValueError, match="credentials do not belong in params.yaml"):
        Params.model_validate({"index": {"backend": "milvus", "uri": "https://user:secret@milvus.example:19530"}})
    table, features = products(20, seed=6)
    with pytest.raises(PipelineError, match="index.kind = ivfpq is not built by Milvus Lite"):
        stored(table, features, tmp_path, IndexParams(backend="milvus", kind="ivfpq"))
    manifest, _ = sync(table, features, ["category"], IndexParams(backend="milvus"), Paths(tmp_path))
    with pytest.raises(PipelineError, match=r"holds 20 entities, but the index at .* lists 19; run `dvc repro -f "
                                            r"index` to sync it"):
        MilvusVectors.open(manifest, Paths(tmp_path), table["name"].tolist()[:19])


def test_a_milvus_server_serves_one_process_while_another_indexes(shop_search_root: Path, shop_catalogue: Path,
                                                                  milvus_server: str, tmp_path: Path):
    """With a Milvus Lite file one process at a time holds the gallery; with a server, a running search and a
    re-index share it (the server's URL is what a cluster's would be; the token comes from the environment)."""
    settings = IndexParams(backend="milvus", uri=milvus_server)
    root = rebuilt_with(shop_search_root, tmp_path / "root", shop_data(shop_catalogue), settings)
    engine = SearchEngine.open(Paths(root))  # held open, as `fashion-cir serve` holds it
    again = subprocess.run([sys.executable, "-c", REINDEX, str(root), str(shop_catalogue), milvus_server],
                           capture_output=True, text=True, env={**os.environ, "MILVUS_TOKEN": "root:Milvus"})
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout.splitlines()[-1]) == {"upserted": 0, "deleted": 0, "recreated": 0}
    answer = subprocess.run([sys.executable, "-m", "pipeline.cli", "search", "--root", str(root), "--text",
                             "a red dress", "--json"], capture_output=True, text=True)
    assert answer.returncode == 0, answer.stderr[-2000:]
    names = [hit["name"] for hit in json.loads(answer.stdout)[0]["hits"]]
    assert names == [hit.name for hit in engine.search(None, "a red dress", 10).hits]

    local = Params(index=IndexParams(backend="milvus", uri=str(tmp_path / "held.db")))
    holder = stored(*products(10, seed=8), tmp_path, local.index)  # this process holds the file
    held = subprocess.run([sys.executable, "-c", OPEN_LOCAL, str(tmp_path / "held.db")], capture_output=True,
                          text=True)
    assert "one process at a time can hold it" in held.stdout, held.stdout + held.stderr[-2000:]
    holder.client.close()


REINDEX = """
import json, sys
from pipeline.config import GalleryParams, IndexParams, Params
from pipeline.paths import Paths
from pathlib import Path
from pipeline.search import index
from tests.support.search_fixture import shop_data
root, shop, uri = sys.argv[1:]
params = Params(data=shop_data(shop), gallery=GalleryParams(root=shop), index=IndexParams(backend="milvus", uri=uri))
report = index.run(params, Paths(Path(root)))
print(json.dumps({key: report[key] for key in ("upserted", "deleted", "recreated")}))
"""

OPEN_LOCAL = """
import sys
from pipeline.errors import PipelineError
from pipeline.search.milvus_index import connect
try:
    connect(sys.argv[1])
except PipelineError as error:
    print(error)
"""
