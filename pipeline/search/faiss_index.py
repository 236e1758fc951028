"""FAISS inner-product indexes over normalised features (cosine similarity), built the same way for mining hard
negatives and for the search gallery.

    flat   exact search (the reference the others are measured against)
    ivf    inverted lists over k-means cells: searches `nprobe` of `nlist` cells
    hnsw   a navigable small-world graph: `hnsw_m` neighbours per node, `ef_search` candidates per query
    ivfpq  inverted lists with product-quantised codes (`pq_m` bytes per vector), re-ranked with the exact vectors
           (`refine` x k candidates): a fraction of flat's memory scan at nearly its recall
"""

from __future__ import annotations

import faiss
import numpy as np

from pipeline.config import IndexParams
from pipeline.errors import PipelineError


def _nlist(settings: IndexParams, n: int) -> int:
    return settings.nlist or max(1, int(np.sqrt(n)))


def build_index(features: np.ndarray, kind: str, seed: int = 0, settings: IndexParams | None = None) -> faiss.Index:
    """An inner-product index of `kind` over `features`; `settings` give each kind's knobs (defaults: IndexParams)."""
    settings = settings or IndexParams(kind="flat")
    features = np.ascontiguousarray(features, dtype=np.float32)
    n, dim = features.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.ef_construction
        index.hnsw.efSearch = settings.ef_search
    elif kind == "ivf":
        nlist = _nlist(settings, n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.spherical = True  # unit centroids: inner-product assignment is then cosine, not norm-biased
        index.train(features)
        index.nprobe = settings.nprobe or max(1, nlist // 4)
    elif kind == "ivfpq":
        index = _ivfpq(features, settings, seed)
    else:
        raise PipelineError(f"index kind '{kind}' is not allowed: use flat, hnsw, ivf or ivfpq.")
    index.add(features)
    return index


def _training_sample(features: np.ndarray, size: int, seed: int) -> np.ndarray:
    """At most `size` rows, drawn by `seed`: k-means needs about 40 points per list, not the whole gallery."""
    if len(features) <= size:
        return features
    return features[np.sort(np.random.default_rng(seed).choice(len(features), size, replace=False))]


def _ivfpq(features: np.ndarray, settings: IndexParams, seed: int) -> faiss.Index:
    n, dim = features.shape
    pq_m = settings.pq_m or max(1, dim // 8)
    if dim % pq_m:
        raise PipelineError(f"index.pq_m = {pq_m} must divide the feature dimension {dim}.")
    nlist = _nlist(settings, n)
    if n < max(nlist, 256) * 4:
        raise PipelineError(f"index.kind = ivfpq needs at least {max(nlist, 256) * 4} images to train its "
                            f"quantisers ({n} here); use flat or hnsw for a gallery this small.")
    ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    ivf.cp.spherical = True
    ivf.train(_training_sample(features, 50 * nlist, seed))
    ivf.nprobe = settings.nprobe or max(1, nlist // 4)
    if not settings.refine:
        return ivf
    refined = faiss.IndexRefineFlat(ivf)
    refined.k_factor = settings.refine
    return refined
