"""Every index kind the `index` stage builds finds the true nearest neighbours on data where they are clear, and
an impossible setting is one sentence."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from pipeline.config import IndexParams
from pipeline.errors import PipelineError
from pipeline.search.faiss_index import build_index


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    faiss.normalize_L2(rows)
    return rows


@pytest.fixture(scope="module")
def gallery() -> np.ndarray:
    """Unit vectors of low intrinsic dimension, as features are; 3,000 of them in 64 dimensions."""
    rng = np.random.default_rng(0)
    return _unit(rng.standard_normal((3000, 8)) @ rng.standard_normal((8, 64)))


@pytest.mark.parametrize("kind, settings", [
    ("flat", IndexParams()),
    ("ivf", IndexParams(nprobe=16)),
    ("hnsw", IndexParams(ef_search=64)),
    ("ivfpq", IndexParams(nlist=16, nprobe=8, pq_m=16, refine=8)),
])
def test_each_kind_finds_the_nearest_neighbours(gallery: np.ndarray, kind: str, settings: IndexParams):
    queries = _unit(gallery[:50] + 0.01 * np.random.default_rng(1).standard_normal(gallery[:50].shape))
    exact = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")[:, :10]  # brute force, outside FAISS
    _, found = build_index(gallery, kind, 0, settings).search(queries, 10)
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)])
    assert recall >= (1.0 if kind == "flat" else 0.9), (kind, recall)
    assert (found[:, 0] == np.arange(50)).mean() >= 0.9  # each query's own source vector comes first


def test_impossible_settings_are_one_sentence(gallery: np.ndarray):
    with pytest.raises(PipelineError, match="needs at least"):
        build_index(gallery[:100], "ivfpq", 0, IndexParams(pq_m=8))
    with pytest.raises(PipelineError, match="must divide the feature dimension 64"):
        build_index(gallery, "ivfpq", 0, IndexParams(nlist=16, pq_m=7))
