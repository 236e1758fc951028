"""Search filters: the filter language, the rows it allows, and the nearest-neighbour search within them on every
index kind (k results whenever k rows match, however rare; never a row the filter refuses)."""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd
import pytest

from pipeline.config import IndexParams
from pipeline.errors import PipelineError
from pipeline.search.faiss_index import build_index, enable_reconstruction, search_within
from pipeline.search.filters import Condition, GalleryFilter, parse_where

KINDS = [("flat", IndexParams()), ("ivf", IndexParams(nlist=64, nprobe=2)), ("hnsw", IndexParams(ef_search=16)),
         ("ivfpq", IndexParams(nlist=64, nprobe=2, pq_m=16, refine=4))]


@pytest.mark.parametrize("text, condition", [
    ("colour = red", Condition("colour", "=", ("red",))),
    ("  base colour != 'Navy Blue' ", Condition("base colour", "!=", ("Navy Blue",))),
    ("gender in (women, girls)", Condition("gender", "in", ("women", "girls"))),
    ("gender NOT IN (men)", Condition("gender", "not in", ("men",))),
    ("price<=40", Condition("price", "<=", ("40",))),
    ("year > 2012", Condition("year", ">", ("2012",))),
    ("title = shirt (slim fit)", Condition("title", "=", ("shirt (slim fit)",))),
])
def test_filters_read_as_written(text: str, condition: Condition):
    assert parse_where(text) == condition


@pytest.mark.parametrize("text, message", [
    ("colour red", "is not one this search reads; write column = value"),
    ("colour =", "has no value after ="),
    ("gender in ()", "lists no values inside its parentheses"),
])
def test_a_filter_that_is_not_one_is_one_sentence(text: str, message: str):
    with pytest.raises(PipelineError, match=message):
        parse_where(text)


@pytest.fixture(scope="module")
def products() -> GalleryFilter:
    return GalleryFilter(pd.DataFrame({
        "category": ["shoes", "shoes", "watches", "tops", "tops"],
        "colour": ["Red", "black", "red", "", "Blue"],
        "price": ["35", "80", "120.5", "", "9"],
        "size": ["40", "41", "M", "L", "S"],  # numbers and words: a text column
    }))


@pytest.mark.parametrize("filters, rows", [
    (["colour = red"], [0, 2]),  # text compares case-insensitively
    (["colour != red"], [1, 3, 4]),
    (["category in (shoes, tops)", "colour = red"], [0]),
    (["price <= 80"], [0, 1, 4]),  # an empty cell matches no comparison
    (["price > 80", "category = watches"], [2]),
    (["price = 35"], [0]),
    (["size = 40"], [0]),
    (["colour not in (red, black)"], [3, 4]),
])
def test_the_rows_every_filter_allows(products: GalleryFilter, filters: list[str], rows: list[int]):
    assert np.flatnonzero(products.allowed([parse_where(f) for f in filters])).tolist() == rows


@pytest.mark.parametrize("refuse", ["check", "allowed"])  # checked alone (any backend), or on the way to the rows
def test_wrong_columns_and_types_are_one_sentence(products: GalleryFilter, refuse: str):
    refused = getattr(products, refuse)
    with pytest.raises(PipelineError, match=r"unknown column 'color'; the gallery's columns are: category, colour"):
        refused([parse_where("colour = red"), parse_where("color = red")])
    with pytest.raises(PipelineError, match=r"compares 'size', which holds text; use =, !=, in or not in"):
        refused([parse_where("size >= 40")])
    with pytest.raises(PipelineError, match=r"compares with 'cheap', which is not a number"):
        refused([parse_where("price < cheap")])
    products.check([parse_where("price < 40"), parse_where("size = m")])
    assert products.allowed([]) is None


@pytest.fixture(scope="module")
def gallery() -> np.ndarray:
    rng = np.random.default_rng(0)
    rows = np.ascontiguousarray(rng.standard_normal((25_000, 8)) @ rng.standard_normal((8, 64)), dtype=np.float32)
    faiss.normalize_L2(rows)
    return rows


def _exact(gallery: np.ndarray, queries: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    rows = np.flatnonzero(allowed)
    return rows[np.argsort(-(queries @ gallery[rows].T), axis=1, kind="stable")[:, :k]]


@pytest.mark.parametrize("kind, settings", KINDS)
def test_a_rare_filter_gets_k_results_on_every_index_kind(gallery: np.ndarray, kind: str, settings: IndexParams):
    """About 1% of the gallery matches: a search that filtered after the fact would return far fewer than k (its
    nearest 10 are mostly elsewhere); within the allowed rows it returns exactly k, all allowed, the true nearest."""
    index = enable_reconstruction(build_index(gallery, kind, 0, settings))
    queries = gallery[:20]
    rng = np.random.default_rng(1)
    for share in (0.01, 0.95):  # rare: the exact scan; common: FAISS's selector inside the index's own search
        allowed = rng.random(len(gallery)) < share
        scores, rows = search_within(index, queries, 10, allowed)
        assert (rows >= 0).all() and allowed[rows].all(), kind
        exact = _exact(gallery, queries, allowed, 10)
        recall = np.mean([len(set(r) & set(e)) / 10 for r, e in zip(rows, exact, strict=True)])
        assert recall >= (1.0 if share < 0.5 or kind == "flat" else 0.8), (kind, share, recall)
        assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    _, unfiltered = index.search(queries, 10)
    rare = rng.random(len(gallery)) < 0.01
    assert (rare[unfiltered].sum(axis=1) < 10).all()  # what a post-filter would have left: fewer than k


@pytest.mark.parametrize("kind, settings", KINDS)
def test_fewer_matches_than_k_give_all_of_them(gallery: np.ndarray, kind: str, settings: IndexParams):
    index = enable_reconstruction(build_index(gallery, kind, 0, settings))
    allowed = np.zeros(len(gallery), dtype=bool)
    allowed[[7, 700, 7000]] = True
    _, rows = search_within(index, gallery[:2], 10, allowed)
    assert [sorted(r[r >= 0]) for r in rows] == [[7, 700, 7000]] * 2 and (rows[:, 3:] == -1).all()
    _, none = search_within(index, gallery[:2], 10, np.zeros(len(gallery), dtype=bool))
    assert (none == -1).all()
