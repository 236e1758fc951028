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
import torch

from pipeline.config import IndexParams
from pipeline.errors import PipelineError
from pipeline.topk import top_k


def inverted_lists(settings: IndexParams, n: int) -> int:
    """ivf, ivfpq: the lists of a gallery of `n` images (index.nlist, or about sqrt(n))."""
    return settings.nlist or max(1, int(np.sqrt(n)))


def probed_lists(settings: IndexParams, nlist: int) -> int:
    """ivf, ivfpq: the lists searched per query (index.nprobe, or a quarter of them)."""
    return settings.nprobe or max(1, nlist // 4)


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
        nlist = inverted_lists(settings, n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.spherical = True  # unit centroids: inner-product assignment is then cosine, not norm-biased
        index.train(features)
        index.nprobe = probed_lists(settings, nlist)
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
    nlist = inverted_lists(settings, n)
    if n < max(nlist, 256) * 4:
        raise PipelineError(f"index.kind = ivfpq needs at least {max(nlist, 256) * 4} images to train its "
                            f"quantisers ({n} here); use flat or hnsw for a gallery this small.")
    ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    ivf.cp.spherical = True
    ivf.train(_training_sample(features, 50 * nlist, seed))
    ivf.nprobe = probed_lists(settings, nlist)
    if not settings.refine:
        return ivf
    refined = faiss.IndexRefineFlat(ivf)
    refined.k_factor = settings.refine
    return refined


EXACT_LIMIT = 20_000  # a filter allowing at most this many rows is searched exactly over them (a few ms per query)


def search_within(index: faiss.Index, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of the k nearest gallery rows of each query among the `allowed` rows (a boolean mask; None:
    all), the filter applied inside the search, never after it: FAISS's ID selector within the index's own search,
    and an exact scan of the allowed rows' vectors for a filter that allows few rows and for any query the index
    found fewer than k of them for (an approximate index may miss rare matches). So k rows come back whenever k
    rows are allowed. Missing places hold row -1."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if allowed is None:
        return index.search(queries, min(k, index.ntotal))
    rows = np.flatnonzero(allowed).astype(np.int64)
    k = min(k, index.ntotal)
    if len(rows) <= EXACT_LIMIT:
        return _exact(index, queries, k, rows)
    selector = faiss.IDSelectorBatch(rows)  # held here for as long as the search runs
    scores, found = index.search(queries, k, params=_selecting(index, selector))
    short = (found >= 0).sum(axis=1) < min(k, len(rows))
    if short.any():
        scores[short], found[short] = _exact(index, queries[short], k, rows)
    return scores, found


def _exact(index: faiss.Index, queries: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inner products with the `rows`' own vectors (reconstructed from the index), best k first (pipeline/topk.py:
    ties to the earlier row)."""
    stored = flat_vectors(index)
    vectors = stored[rows] if stored is not None else index.reconstruct_batch(rows)
    scores, found = top_k(torch.from_numpy(queries), torch.from_numpy(np.ascontiguousarray(vectors)), k)
    return scores.numpy(), np.append(rows, -1)[found.numpy()]  # found -1 (nothing) stays -1


def _selecting(index: faiss.Index, selector: faiss.IDSelector) -> faiss.SearchParameters:
    """Search parameters that restrict `index`'s search to `selector`, keeping the index's own search settings
    (nprobe, efSearch, the refine factor), which a parameters object would otherwise reset to FAISS's defaults."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexRefine):
        return faiss.IndexRefineSearchParameters(k_factor=index.k_factor,
                                                 base_index_params=_selecting(index.base_index, selector))
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
    return faiss.SearchParameters(sel=selector)


def enable_reconstruction(index: faiss.Index) -> faiss.Index:
    """`index` able to give back its vectors by row, as the exact scan of search_within needs: an IVF index only
    with its direct map (a refined one gives them from its exact copy)."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexIVF):
        inner.make_direct_map()
    return index


def stores_exact_vectors(index: faiss.Index) -> bool:
    """Whether `index` gives back the very vectors it was built from (not product-quantised approximations)."""
    inner = faiss.downcast_index(index)
    return isinstance(inner, (faiss.IndexFlat, faiss.IndexHNSWFlat, faiss.IndexIVFFlat, faiss.IndexRefineFlat))


def flat_vectors(index: faiss.Index) -> np.ndarray | None:
    """[ntotal, d] the vectors a flat, HNSW or refined index keeps uncompressed, as a view of its memory (no copy);
    None where they are not stored as one array (IVF lists, product-quantised codes)."""
    inner = faiss.downcast_index(index)
    storage = inner.storage if isinstance(inner, faiss.IndexHNSW) else \
        inner.refine_index if isinstance(inner, faiss.IndexRefine) else inner
    storage = faiss.downcast_index(storage)
    if not isinstance(storage, faiss.IndexFlat) or storage.ntotal == 0:
        return None
    return faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * storage.d).reshape(storage.ntotal, storage.d)
