"""FAISS inner-product indexes over normalised features (cosine similarity), as mining builds them."""

from __future__ import annotations

import faiss
import numpy as np

from pipeline.errors import PipelineError


def build_index(features: np.ndarray, kind: str, seed: int = 0) -> faiss.Index:
    """An inner-product index over `features` (cosine similarity for normalised rows)."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    n, dim = features.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
    elif kind == "ivf":
        nlist = max(1, int(np.sqrt(n)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(features)
        index.nprobe = max(1, nlist // 4)
    else:
        raise PipelineError(f"negatives.index = '{kind}' is not allowed: use flat, hnsw or ivf.")
    index.add(features)
    return index
