"""Exact ranking of queries against a gallery, a chunk of queries at a time (pipeline/topk.py): memory is bounded by
the chunk (about `cells` scores), never by queries x gallery, so a category of 250,000 val images and its 280,000
generated queries is evaluated in the memory of its feature matrices.

What is kept per query is what the protocols read: the target's 0-based rank (ties count against the target, so
a model that scores everything alike gets no credit from the gallery's order) and the best k columns (ties go to the
earlier column, as a stable sort puts them). Both are exact: each chunk's scores are the rows of the same product
the dense computation would make, and the target's rank is counted on the very scores the top k is taken from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from pipeline.topk import BLOCK_CELLS, block_rows, top_k

MISSED = torch.iinfo(torch.long).max  # the rank of a target that cannot be retrieved (it was removed)


@dataclass(frozen=True)
class Ranked:
    """Every query's target rank and its best k gallery columns, best first."""

    ranks: torch.Tensor       # [Q] long: 0-based rank of the target; MISSED if it was removed; empty if no targets
    top: torch.Tensor         # [Q, k] long: gallery columns, -1 past the images the query's ranking holds
    top_scores: torch.Tensor  # [Q, k] float: their scores, NaN where `top` is -1

    def columns(self, q: int) -> list[int]:
        """Query q's top columns, without the padding."""
        return [c for c in self.top[q].tolist() if c >= 0]


def rank(query: torch.Tensor, gallery: torch.Tensor, target: torch.Tensor | None, k: int,
         excluded: torch.Tensor | None = None, members: torch.Tensor | None = None,
         cells: int = BLOCK_CELLS) -> Ranked:
    """Rank each query's row of `query @ gallery.T`, a chunk of rows at a time.

    `excluded` [Q] names one column removed from each query's ranking (CIRR removes the reference); `members`
    [Q, M] (-1 padded) restricts each ranking to those columns (CIRR's img_set), less the excluded one. A target
    outside what the ranking holds is never retrieved (rank MISSED), as in CLIP4Cir's CIRR code. The scores are
    computed on `query`'s device (a GPU ranks a million-image gallery in seconds); the results come back on the CPU."""
    q_count, g_count, device = len(query), len(gallery), query.device
    width = min(k, g_count if members is None else members.shape[1])
    ranks = torch.empty(q_count if target is not None else 0, dtype=torch.long)
    step = block_rows(g_count, cells)
    removed = _removed(excluded, members, device)
    with tqdm(total=q_count, desc=f"rank against {g_count:,} images", unit="query", mininterval=2,
              disable=q_count <= step) as progress:

        def count(rows: slice, columns: slice, scores: torch.Tensor, skipped: torch.Tensor | None) -> None:
            if target is not None:
                ranks[rows] = _target_ranks(scores, skipped, target[rows].to(device)).cpu()
            progress.update(len(scores))

        scores, top = top_k(query, gallery, width, removed, query_block=step, seen=count)
    return Ranked(ranks, top.cpu(), scores.masked_fill(top < 0, float("nan")).cpu())


def _removed(excluded: torch.Tensor | None, members: torch.Tensor | None, device: torch.device):
    """The columns each query's ranking does not hold, as top_k asks for them; None when it holds every column."""
    if excluded is None and members is None:
        return None
    excluded = None if excluded is None else excluded.to(device)[:, None]
    members = None if members is None else members.to(device)

    def removed(rows: slice, columns: slice) -> torch.Tensor:
        outside = torch.zeros(rows.stop - rows.start, columns.stop - columns.start, dtype=torch.bool, device=device)
        if members is not None:
            outside = ~_listed(members[rows], columns)
        if excluded is not None:
            outside |= _listed(excluded[rows], columns)
        return outside

    return removed


def _listed(listed: torch.Tensor, columns: slice) -> torch.Tensor:
    """bool [len(listed), columns]: True at the columns each row of `listed` names (-1 names none)."""
    width = columns.stop - columns.start
    position = listed - columns.start
    position = torch.where((listed >= 0) & (position >= 0) & (position < width), position, width)
    marked = torch.zeros(len(listed), width + 1, dtype=torch.bool, device=listed.device)
    return marked.scatter_(1, position, True)[:, :width]


def _target_ranks(scores: torch.Tensor, removed: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor:
    """0-based rank of each row's target among the columns of `scores` not `removed`; MISSED where it is removed."""
    ahead = scores >= scores.gather(1, target[:, None])
    if removed is None:
        return ahead.sum(dim=1) - 1
    ranks = (ahead & ~removed).sum(dim=1) - 1
    return ranks.masked_fill(removed.gather(1, target[:, None]).squeeze(1), MISSED)
