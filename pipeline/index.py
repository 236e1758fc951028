"""FAISS inner-product search over normalised features, and hard-negative mining built on it."""

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


def mine_hard_negatives(
    queries: np.ndarray,
    gallery: np.ndarray,
    targets: np.ndarray,
    k: int,
    kind: str,
    max_target_similarity: float = 1.0,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k gallery rows most similar to each query that are neither its target nor too close to it.

    queries [Q, D], gallery [N, D] (normalised), targets [Q] gallery rows of the targets. A candidate whose
    similarity to the target is at least `max_target_similarity` is treated as a likely false negative (a
    near-duplicate of the target) and skipped, as is one in the target's group (`groups` [N], one integer per
    gallery row, pipeline/false_negatives.py; by default every row is its own group, so only the target).
    Returns gallery indices [Q, k] and scores, -1 / NaN where fewer than k candidates qualify.
    """
    out_idx = np.full((len(queries), k), -1, dtype=np.int64)
    out_score = np.full((len(queries), k), np.nan, dtype=np.float32)
    if k == 0 or len(queries) == 0:
        return out_idx, out_score
    index = build_index(gallery, kind, seed)
    groups = np.arange(len(gallery)) if groups is None else groups
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    pending = np.arange(len(queries))
    depth = min(len(gallery), k + 8)
    while len(pending):
        scores, found = index.search(queries[pending], depth)
        still = []
        for row, q in enumerate(pending):
            candidates = found[row][found[row] >= 0]
            cand_scores = scores[row][found[row] >= 0]
            target_sim = gallery[candidates] @ gallery[targets[q]]
            keep = (groups[candidates] != groups[targets[q]]) & (target_sim < max_target_similarity)
            chosen, chosen_scores = candidates[keep][:k], cand_scores[keep][:k]
            if len(chosen) < k and depth < len(gallery):
                still.append(q)
                continue
            out_idx[q, :len(chosen)] = chosen
            out_score[q, :len(chosen)] = chosen_scores
        pending = np.array(still, dtype=np.int64)
        depth = min(len(gallery), depth * 4)
    return out_idx, out_score
