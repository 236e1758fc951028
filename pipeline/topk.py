"""Exact top-k of queries against a gallery by inner product, a block of queries (and of gallery rows) at a time.

Memory is bounded by one block's scores (queries x gallery rows of the block, with the mask built on them), never by
queries x gallery, so a million-image gallery is searched in the memory of its feature matrix. Each gallery block's
k best are merged with those of the blocks before, as faiss.contrib.exhaustive_search.knn_ground_truth merges its
blocks with a ResultHeap. Mining (pipeline/negatives/hard.py), evaluation (pipeline/evaluation/ranking.py) and the
search index's exact scan of a filter's rows (pipeline/search/faiss_index.py) all search through `top_k`.

The scores of a block are the product of its query rows and its gallery rows, so a caller that keeps its block sizes
keeps its arithmetic. Ties go to the earlier gallery row (a stable descending sort's order), or, with
`stable=False`, wherever torch.topk puts them, one pass cheaper.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

BLOCK_CELLS = 1 << 24  # scores per block by default: 64 MB of float32 plus the masks built on them

Excluded = Callable[[slice, slice], torch.Tensor]  # (query rows, gallery rows) -> bool [rows, gallery rows]
BlockSeen = Callable[[slice, slice, torch.Tensor, torch.Tensor | None], None]


def stable_top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k best values and their columns, best first, ties to the earlier column: the first k of a stable
    descending argsort, at the cost of torch.topk (whose choice among ties is unspecified) plus one pass."""
    kth = torch.topk(scores, k, dim=1).values[:, -1:]
    above = scores > kth
    tied = scores == kth
    wanted = k - above.sum(dim=1, keepdim=True)
    taken = above | (tied & (tied.cumsum(dim=1, dtype=torch.int32) <= wanted))
    columns = taken.nonzero()[:, 1].view(len(scores), k)  # exactly k per row, in column order
    values = scores.gather(1, columns)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return values.gather(1, order), columns.gather(1, order)


def _torch_top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.topk(scores, k, dim=1)


def block_rows(gallery_size: int, cells: int = BLOCK_CELLS) -> int:
    """Queries scored at once against `gallery_size` gallery rows, for about `cells` scores."""
    return max(1, cells // max(1, gallery_size))


@torch.no_grad()
def top_k(queries: torch.Tensor, gallery: torch.Tensor, k: int, excluded: Excluded | None = None,
          query_block: int | None = None, gallery_block: int | None = None, stable: bool = True,
          seen: BlockSeen | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The scores [Q, k] and gallery rows [Q, k] of each query's k best gallery rows (`queries @ gallery.T`), best
    first; row -1 and score -inf past the rows a query may get.

    Computed on `queries`' device. `excluded(rows, columns)` says which gallery rows (`columns`, a slice of the
    gallery) each query of `rows` (a slice of the queries) may not get, True where not. The queries go `query_block`
    at a time (by default as many as make BLOCK_CELLS scores against the whole gallery), the gallery `gallery_block`
    rows at a time (by default all at once). `seen(rows, columns, scores, excluded)`, when given, sees each block's
    scores before the excluded ones are removed: what a caller counts beside the top k (evaluation's target ranks).
    """
    device, q_count, g_count = queries.device, len(queries), len(gallery)
    gallery = gallery.to(device)
    depth = min(k, g_count)
    query_block = query_block or block_rows(g_count)
    gallery_block = gallery_block or max(1, g_count)
    select = stable_top_k if stable else _torch_top_k
    values, found = [], []
    for start in range(0, q_count, query_block):
        rows = slice(start, min(start + query_block, q_count))
        query = queries[rows]
        best = torch.full((len(query), depth), float("-inf"), dtype=query.dtype, device=device)
        best_rows = torch.full((len(query), depth), -1, dtype=torch.long, device=device)
        for first in range(0, max(1, g_count), gallery_block):
            columns = slice(first, min(first + gallery_block, g_count))
            scores = query @ gallery[columns].T
            skipped = excluded(rows, columns) if excluded is not None else None
            if seen is not None:
                seen(rows, columns, scores, skipped)
            if skipped is not None:
                scores.masked_fill_(skipped, float("-inf"))
            if depth:
                value, column = select(scores, min(depth, scores.shape[1]))
                best, position = select(torch.cat([best, value], 1), depth)
                best_rows = torch.cat([best_rows, column + first], 1).gather(1, position)
        values.append(best)
        found.append(torch.where(best > float("-inf"), best_rows, -1))
    scores = torch.full((q_count, k), float("-inf"), dtype=queries.dtype, device=device)
    rows_found = torch.full((q_count, k), -1, dtype=torch.long, device=device)
    if q_count and depth:
        scores[:, :depth], rows_found[:, :depth] = torch.cat(values), torch.cat(found)
    return scores, rows_found
