"""Exact ranking of queries against a gallery, a chunk of queries at a time: memory is bounded by the chunk (about
CHUNK_CELLS scores), never by queries x gallery, so a category of 250,000 val images and its 280,000 generated
queries is evaluated in the memory of its feature matrices.

What is kept per query is what the protocols read: the target's 0-based rank (ties count against the target, so
a model that scores everything alike gets no credit from the gallery's order) and the best k columns (ties go to the
earlier column, as a stable sort puts them). Both are exact: each chunk's scores are the rows of the same product
the dense computation would make, and the top k is torch.topk completed by the tied columns in column order.

Mining and the search index keep FAISS's exact search (itself chunked): they need neither the target's rank nor a
tie order, and FAISS's kernels are faster there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

MISSED = torch.iinfo(torch.long).max  # the rank of a target that cannot be retrieved (it was removed)
CHUNK_CELLS = 1 << 24  # scores per chunk: 64 MB of float32 plus the masks built on them, a few hundred MB at most


@dataclass(frozen=True)
class Ranked:
    """Every query's target rank and its best k gallery columns, best first."""

    ranks: torch.Tensor       # [Q] long: 0-based rank of the target; MISSED if it was removed; empty if no targets
    top: torch.Tensor         # [Q, k] long: gallery columns, -1 past the images the query's ranking holds
    top_scores: torch.Tensor  # [Q, k] float: their scores, NaN where `top` is -1

    def columns(self, q: int) -> list[int]:
        """Query q's top columns, without the padding."""
        return [c for c in self.top[q].tolist() if c >= 0]


def exact_top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k best columns and their scores, best first, ties to the earlier column: the first k of a stable
    descending argsort, at the cost of torch.topk (whose choice among ties is unspecified) plus one pass."""
    k = min(k, scores.shape[1])
    kth = torch.topk(scores, k, dim=1).values[:, -1:]
    above = scores > kth
    tied = scores == kth
    wanted = k - above.sum(dim=1, keepdim=True)
    taken = above | (tied & (tied.cumsum(dim=1, dtype=torch.int32) <= wanted))
    columns = taken.nonzero()[:, 1].view(len(scores), k)  # exactly k per row, in column order
    values = scores.gather(1, columns)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return columns.gather(1, order), values.gather(1, order)


def chunk_rows(gallery_size: int, cells: int = CHUNK_CELLS) -> int:
    """Queries scored at once against a gallery of `gallery_size`."""
    return max(1, cells // max(1, gallery_size))


def rank(query: torch.Tensor, gallery: torch.Tensor, target: torch.Tensor | None, k: int,
         excluded: torch.Tensor | None = None, members: torch.Tensor | None = None,
         cells: int = CHUNK_CELLS) -> Ranked:
    """Rank each query's row of `query @ gallery.T`, a chunk of rows at a time.

    `excluded` [Q] names one column removed from each query's ranking (CIRR removes the reference); `members`
    [Q, M] (-1 padded) restricts each ranking to those columns (CIRR's img_set), less the excluded one. A target
    outside what the ranking holds is never retrieved (rank MISSED), as in CLIP4Cir's CIRR code. The scores are
    computed on `query`'s device (a GPU ranks a million-image gallery in seconds); the results come back on the CPU."""
    q_count, g_count, device = len(query), len(gallery), query.device
    gallery = gallery.to(device)
    width = min(k, g_count if members is None else members.shape[1])
    ranks = torch.empty(q_count if target is not None else 0, dtype=torch.long)
    top = torch.full((q_count, width), -1, dtype=torch.long)
    top_scores = torch.full((q_count, width), float("nan"), dtype=query.dtype)
    if members is not None:
        members = _sorted_members(members.to(device), g_count)
    step = chunk_rows(g_count, cells)
    for start in tqdm(range(0, q_count, step), desc=f"rank against {g_count:,} images", unit="chunk",
                      mininterval=2, disable=q_count <= step):
        rows = slice(start, min(start + step, q_count))
        scores = query[rows] @ gallery.T
        held = torch.ones(scores.shape, dtype=torch.bool, device=device)  # what each query's ranking holds
        if excluded is not None:
            held[torch.arange(len(scores), device=device), excluded[rows].to(device)] = False
        columns = None
        if members is not None:  # rank within the members: their scores, in column order
            columns = members[rows]
            valid = columns < g_count
            gathered = columns.clamp(max=g_count - 1)
            held = held.gather(1, gathered) & valid
            scores = scores.gather(1, gathered)
        if target is not None:
            ranks[rows] = _target_ranks(scores, held, target[rows].to(device), columns).cpu()
        if width:
            best, values = exact_top_k(scores.masked_fill(~held, float("-inf")), width)
            inside = torch.arange(width, device=device)[None, :] < held.sum(dim=1, keepdim=True)
            if columns is not None:
                best = columns.gather(1, best)
            top[rows] = torch.where(inside, best, -1).cpu()
            top_scores[rows] = torch.where(inside, values, float("nan")).cpu()
    return Ranked(ranks, top, top_scores)


def _sorted_members(members: torch.Tensor, g_count: int) -> torch.Tensor:
    """Each row's distinct member columns in ascending order, padding (g_count) last."""
    members = torch.where(members < 0, g_count, members).sort(dim=1).values
    repeated = torch.zeros_like(members, dtype=torch.bool)
    repeated[:, 1:] = members[:, 1:] == members[:, :-1]
    return torch.where(repeated, g_count, members).sort(dim=1).values


def _target_ranks(scores: torch.Tensor, held: torch.Tensor, target: torch.Tensor,
                  columns: torch.Tensor | None) -> torch.Tensor:
    """0-based rank of each row's target among the `held` entries of `scores`; MISSED where it is not held."""
    if columns is None:
        position, present = target, torch.ones(len(target), dtype=torch.bool, device=target.device)
    else:
        matches = columns == target[:, None]
        position, present = matches.int().argmax(dim=1), matches.any(dim=1)
    target_scores = scores.gather(1, position[:, None])
    ranks = ((scores >= target_scores) & held).sum(dim=1) - 1
    missed = ~(present & held.gather(1, position[:, None]).squeeze(1))
    return ranks.masked_fill(missed, MISSED)
