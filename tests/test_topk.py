"""The blockwise exact top-k (pipeline/topk.py) equals the plain computation (the whole query x gallery matrix, the
excluded rows masked, a stable descending argsort; torch.topk over the row for `stable=False`) at every block size,
on random scores and on scores full of ties."""

from __future__ import annotations

import pytest
import torch

from pipeline.topk import stable_top_k, top_k


def features(kind: str, queries: int, gallery: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and gallery whose every product is exact in float32, whatever the blocks (a block's product is
    otherwise free to round differently from the whole matrix's): random scores against the identity, or small
    integers (many exact ties)."""
    if kind == "coarse":
        return (torch.randint(-2, 3, (queries, 6), generator=gen).float(),
                torch.randint(-2, 3, (gallery, 6), generator=gen).float())
    return torch.randn(queries, gallery, generator=gen), torch.eye(gallery)


def plain(query: torch.Tensor, gallery: torch.Tensor, k: int, mask: torch.Tensor | None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    scores = query @ gallery.T
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
    values = scores.gather(1, order)
    rows = torch.where(values > float("-inf"), order, -1)
    pad = k - rows.shape[1]
    return (torch.nn.functional.pad(values, (0, pad), value=float("-inf")),
            torch.nn.functional.pad(rows, (0, pad), value=-1))


@pytest.mark.parametrize("kind", ["random", "coarse"])
@pytest.mark.parametrize("masked", [False, True])
def test_blockwise_top_k_equals_the_full_matrix_argsort(kind: str, masked: bool):
    gen = torch.Generator().manual_seed(0)
    query, gallery = features(kind, 53, 211, gen)
    mask = torch.rand(53, 211, generator=gen) < 0.7 if masked else None
    mask_of = None if mask is None else (lambda rows, columns: mask[rows, columns])
    for k in (1, 5, 40, 211, 300):
        expected = plain(query, gallery, k, mask)
        for query_block, gallery_block in ((None, None), (7, None), (1, 13), (53, 17), (10, 64), (100, 500)):
            scores, rows = top_k(query, gallery, k, mask_of, query_block, gallery_block)
            assert torch.equal(rows, expected[1]), (k, query_block, gallery_block)
            assert torch.equal(scores, expected[0])
    if kind == "coarse":
        scores = query @ gallery.T
        assert (scores[:, :, None] == scores[:, None, :10]).sum() > 20 * len(query)  # ties were there to break


def test_torch_ties_equal_torch_topk_over_the_row_where_the_gallery_is_one_block():
    gen = torch.Generator().manual_seed(1)
    query, gallery = features("random", 40, 300, gen)
    scores, rows = top_k(query, gallery, 12, stable=False)
    values, columns = torch.topk(query @ gallery.T, 12, dim=1)
    assert torch.equal(rows, columns) and torch.equal(scores, values)
    blocked_scores, blocked_rows = top_k(query, gallery, 12, query_block=9, gallery_block=50, stable=False)
    assert torch.equal(blocked_rows, rows) and torch.equal(blocked_scores, scores)  # no ties here: one answer


def test_each_block_is_seen_before_its_excluded_rows_are_removed():
    gallery = torch.eye(4)
    query = torch.tensor([[0.9, 0.1, 0.5, 0.3]])
    seen = []
    scores, rows = top_k(query, gallery, 2, lambda r, c: torch.tensor([[True, False, False, False]])[r, c],
                         gallery_block=2, seen=lambda r, c, s, x: seen.append((c, s.clone(), x)))
    assert rows.tolist() == [[2, 3]] and scores.tolist() == [pytest.approx([0.5, 0.3])]
    assert [c for c, _, _ in seen] == [slice(0, 2), slice(2, 4)]
    assert seen[0][1].tolist() == [pytest.approx([0.9, 0.1])] and seen[0][2].tolist() == [[True, False]]


def test_nothing_to_rank_gives_padding():
    scores, rows = top_k(torch.ones(3, 2), torch.ones(2, 2), 4, lambda r, c: torch.ones(3, 2, dtype=torch.bool)[r, c])
    assert (rows == -1).all() and torch.isinf(scores).all() and rows.shape == (3, 4)
    scores, rows = top_k(torch.ones(0, 2), torch.ones(5, 2), 3)
    assert rows.shape == (0, 3) and scores.shape == (0, 3)


def test_stable_top_k_is_a_stable_descending_sort():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    values, columns = stable_top_k(scores, 2)
    assert columns.tolist() == [[1, 2], [0, 1]] and values.tolist() == [[3.0, 3.0], [0.0, 0.0]]
    assert stable_top_k(scores, 5)[1].tolist() == torch.argsort(scores, dim=1, descending=True, stable=True).tolist()
