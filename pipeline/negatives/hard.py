"""Hard-negative mining: for each training query, the gallery images most like it that are not an answer.

The index is searched around the target (`negatives.anchor: target`: its nearest neighbours are the images most like
the answer) or around the zero-shot composed query (`anchor: query`: the images the base model would retrieve
instead). A candidate in the target's answer group (pipeline/negatives/false_negatives.py) or at least
`negatives.max_target_similarity` similar to the target (a likely near-duplicate) is skipped.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.models.composition import normalised_sum
from pipeline.search.faiss_index import build_index


def mining_queries(anchor: str, reference: np.ndarray, text: np.ndarray, target: np.ndarray) -> np.ndarray:
    """What the index is searched with: the target's own feature, or the zero-shot composed query."""
    if anchor == "target":
        return target
    return normalised_sum(torch.from_numpy(reference), torch.from_numpy(text)).numpy()


def mine_hard_negatives(
    queries: np.ndarray,
    gallery: np.ndarray,
    targets: np.ndarray,
    k: int,
    kind: str,
    max_target_similarity: float = 1.0,
    seed: int = 0,
    answer_groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k gallery rows most similar to each query that are neither its target nor too close to it.

    queries [Q, D], gallery [N, D] (normalised), targets [Q] gallery rows of the targets. A candidate whose
    similarity to the target is at least `max_target_similarity` is treated as a likely false negative (a
    near-duplicate of the target) and skipped, as is one in the target's answer group (`answer_groups` [N],
    one integer per gallery row; by default every row is its own group, so only the target).
    Returns gallery indices [Q, k] and scores, -1 / NaN where fewer than k candidates qualify.
    """
    out_idx = np.full((len(queries), k), -1, dtype=np.int64)
    out_score = np.full((len(queries), k), np.nan, dtype=np.float32)
    if k == 0 or len(queries) == 0:
        return out_idx, out_score
    index = build_index(gallery, kind, seed)
    groups = np.arange(len(gallery)) if answer_groups is None else answer_groups
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
