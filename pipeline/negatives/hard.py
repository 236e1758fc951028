"""Hard-negative mining: for each training query, the gallery images most like it that are not an answer.

The index is searched around the target (`negatives.anchor: target`: its nearest neighbours are the images most like
the answer) or around the zero-shot composed query (`anchor: query`: the images the base model would retrieve
instead). A candidate in the target's answer group (pipeline/negatives/false_negatives.py) or at least
`negatives.max_target_similarity` similar to the target (a likely near-duplicate) is skipped.

Where CUDA is present a flat (exact) index is searched in torch on the GPU (pipeline/topk.py): query-gallery matmul,
the skipped candidates masked, top-k, in chunks of queries and gallery rows so that memory stays bounded. It finds
the same neighbours as FAISS's flat index (ties aside), in a fraction of FAISS's time on the CPU (benchmarks/mine.py).
FAISS serves the CPU, and the approximate `hnsw` and `ivf` indexes everywhere.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.device import compute_device
from pipeline.search.faiss_index import build_index
from pipeline.topk import top_k

QUERY_CHUNK = 1024  # the exact torch search scores QUERY_CHUNK x GALLERY_CHUNK pairs at a time (256 MiB in fp32)
GALLERY_CHUNK = 65536


def exact_search_device(kind: str, device: torch.device | None = None) -> torch.device | None:
    """Where mining searches exactly in torch, or None for FAISS: `device` when given, else the stages' device
    (pipeline/device.py) when it is CUDA; always None for an approximate index."""
    if kind != "flat":
        return None
    if device is not None:
        return torch.device(device)
    chosen = compute_device()
    return chosen if chosen.type == "cuda" else None


def mine_hard_negatives(
    queries: np.ndarray,
    gallery: np.ndarray,
    targets: np.ndarray,
    k: int,
    kind: str,
    max_target_similarity: float = 1.0,
    seed: int = 0,
    answer_groups: np.ndarray | None = None,
    device: torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k gallery rows most similar to each query that are neither its target nor too close to it.

    queries [Q, D], gallery [N, D] (normalised), targets [Q] gallery rows of the targets. A candidate whose
    similarity to the target is at least `max_target_similarity` is treated as a likely false negative (a
    near-duplicate of the target) and skipped, as is one in the target's answer group (`answer_groups` [N],
    one integer per gallery row; by default every row is its own group, so only the target). A flat index is
    searched in torch on `device` (by default CUDA when present: exact_search_device), else with FAISS.
    Returns gallery indices [Q, k] and scores, -1 / NaN where fewer than k candidates qualify.
    """
    out_idx = np.full((len(queries), k), -1, dtype=np.int64)
    out_score = np.full((len(queries), k), np.nan, dtype=np.float32)
    if k == 0 or len(queries) == 0:
        return out_idx, out_score
    groups = np.arange(len(gallery)) if answer_groups is None else answer_groups
    exact = exact_search_device(kind, device)
    if exact is not None:
        return exact_hard_negatives(queries, gallery, targets, k, max_target_similarity, groups, exact)
    index = build_index(gallery, kind, seed)
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


def exact_hard_negatives(queries: np.ndarray, gallery: np.ndarray, targets: np.ndarray, k: int,
                         max_target_similarity: float, groups: np.ndarray, device: torch.device
                         ) -> tuple[np.ndarray, np.ndarray]:
    """mine_hard_negatives' flat search in torch on `device` (pipeline/topk.py): every query scored against every
    gallery row, the skipped candidates (the target's answer group, near-duplicates of the target) masked, the k best
    kept. Queries and gallery go in chunks (QUERY_CHUNK x GALLERY_CHUNK), so memory stays bounded at any gallery
    size; ties fall where torch.topk puts them (mining needs no tie order)."""
    g = torch.from_numpy(np.ascontiguousarray(gallery, dtype=np.float32)).to(device)
    q_all = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(device)
    t_all = torch.from_numpy(np.asarray(targets, dtype=np.int64)).to(device)
    group = torch.from_numpy(np.asarray(groups)).to(device)

    def skipped(rows: slice, columns: slice) -> torch.Tensor:
        target = t_all[rows]
        return (group[columns][None, :] == group[target][:, None]) | (g[target] @ g[columns].T >= max_target_similarity)

    scores, found = top_k(q_all, g, k, skipped, QUERY_CHUNK, GALLERY_CHUNK, stable=False)
    scores = scores.masked_fill(found < 0, float("nan"))
    return found.cpu().numpy(), scores.cpu().numpy()
