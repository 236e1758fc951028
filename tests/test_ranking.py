"""The chunked exact ranking (pipeline/evaluation/ranking.py): hand-made cases where the right answer is known, and
equality with the dense computation (the whole query x gallery matrix, a stable argsort) in small chunks."""

import pytest
import torch

from pipeline.evaluation.metrics import recall_at_k
from pipeline.evaluation.ranking import MISSED, rank

EYE = torch.eye


def scored(scores: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Features whose product is `scores` exactly: the scores as queries, the identity as the gallery."""
    scores = torch.tensor(scores)
    return scores, EYE(scores.shape[1])


def test_ranks_and_recall_on_hand_made_scores():
    query, gallery = scored([[0.9, 0.1, 0.5, 0.3]] * 3)
    ranks = rank(query, gallery, torch.tensor([0, 2, 1]), k=2).ranks
    assert ranks.tolist() == [0, 1, 3]
    assert recall_at_k(ranks, [1, 2, 4]) == pytest.approx({1: 100 / 3, 2: 200 / 3, 4: 100.0})


def test_ties_count_against_the_target():
    query, gallery = scored([[0.5, 0.5, 0.5], [0.2, 0.7, 0.7]])
    assert rank(query, gallery, torch.tensor([0, 2]), k=1).ranks.tolist() == [2, 1]


def test_reference_equal_to_target_is_ranked_like_any_image():
    query, gallery = scored([[0.8, 0.9, 0.1]])  # FashionIQ keeps the reference: it ranks where it scores
    assert rank(query, gallery, torch.tensor([0]), k=1).ranks.tolist() == [1]


def test_removing_the_reference_moves_the_target_up():
    query, gallery = scored([[0.9, 0.5, 0.7, 0.1]])
    reference = torch.tensor([0])
    assert rank(query, gallery, torch.tensor([2]), 1, excluded=reference).ranks.tolist() == [0]
    assert rank(query, gallery, torch.tensor([1]), 1, excluded=reference).ranks.tolist() == [1]
    assert rank(query, gallery, torch.tensor([2]), 1).ranks.tolist() == [1]


def test_a_target_equal_to_the_removed_reference_is_never_retrieved():
    query, gallery = scored([[0.9, 0.5], [0.1, 0.8]])
    ranks = rank(query, gallery, torch.tensor([0, 0]), 1, excluded=torch.tensor([0, 1])).ranks
    assert ranks.tolist() == [MISSED, 0]
    assert recall_at_k(ranks, [1, 1000]) == {1: 50.0, 1000: 50.0}


def test_subset_recall_ranks_only_the_image_set():
    # The img_set is columns 1, 2, 4 and the reference 0; column 3 outscores the target but is outside the set.
    query, gallery = scored([[0.99, 0.1, 0.8, 0.9, 0.7, 0.95]])
    ranked = rank(query, gallery, torch.tensor([4]), 3, excluded=torch.tensor([0]),
                  members=torch.tensor([[4, 0, 2, 1, -1, 2]]))  # any order, padded, a repeat
    assert ranked.ranks.tolist() == [1]
    assert ranked.columns(0) == [2, 4, 1]
    outside = rank(query, gallery, torch.tensor([3]), 3, excluded=torch.tensor([0]),
                   members=torch.tensor([[4, 0, 2, 1]]))
    assert outside.ranks.tolist() == [MISSED]


def test_top_k_skips_excluded_columns_pads_and_breaks_ties_by_gallery_order():
    query, gallery = scored([[0.9, 0.5, 0.5, 0.7], [0.1, 0.2, 0.3, 0.4]])
    ranked = rank(query, gallery, None, 3, excluded=torch.tensor([0, 3]))
    assert ranked.top.tolist() == [[3, 1, 2], [2, 1, 0]] and len(ranked.ranks) == 0
    two = rank(query[:1], gallery[:2], None, 3, excluded=torch.tensor([0]))
    assert two.top.tolist() == [[1, -1]] and two.columns(0) == [1]  # two columns, one of them removed
    assert torch.isnan(two.top_scores).tolist() == [[False, True]]
    assert rank(query, gallery, None, 3).top.tolist() == [[0, 3, 1], [3, 2, 1]]


def dense_ranks(scores, target, excluded=None):
    """The dense definition: how many held gallery items score at least the target's, less one."""
    ahead = scores >= scores.gather(1, target[:, None])
    if excluded is not None:
        ahead &= ~excluded
    ranks = ahead.sum(dim=1) - 1
    if excluded is not None:
        ranks[excluded.gather(1, target[:, None]).squeeze(1)] = MISSED
    return ranks


def dense_top(scores, k, excluded=None):
    if excluded is not None:
        scores = scores.masked_fill(excluded, float("-inf"))
    allowed = scores.shape[1] if excluded is None else (~excluded).sum(dim=1)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
    return [row[:int(n)] for row, n in zip(order.tolist(), torch.as_tensor(allowed).expand(len(scores)),
                                           strict=True)]


@pytest.mark.parametrize("features", ["random", "coarse"])  # coarse: small integers, so many exact ties
def test_chunked_ranks_and_top_k_equal_the_dense_computation(features):
    gen = torch.Generator().manual_seed(0)
    q_count, g_count, dim = 300, 257, 8
    if features == "random":
        query, gallery = torch.randn(q_count, dim, generator=gen), torch.randn(g_count, dim, generator=gen)
    else:
        query = torch.randint(-2, 3, (q_count, dim), generator=gen).float()
        gallery = torch.randint(-2, 3, (g_count, dim), generator=gen).float()
    target = torch.randint(0, g_count, (q_count,), generator=gen)
    reference = torch.randint(0, g_count, (q_count,), generator=gen)
    reference[:20] = target[:20]  # some targets are the removed reference
    members = torch.randint(-1, g_count, (q_count, 7), generator=gen)
    members[:, 0] = target
    members[:10, 0] = -1  # some targets outside their set
    scores = query @ gallery.T
    removed = torch.zeros(q_count, g_count, dtype=torch.bool)
    removed[torch.arange(q_count), reference] = True
    inside = torch.zeros_like(removed)
    for q, row in enumerate(members.tolist()):
        inside[q, [c for c in row if c >= 0]] = True
    outside = ~inside | removed

    for cells in (g_count * 7, g_count * q_count):  # 7 queries a chunk (the last one short), and one chunk
        full = rank(query, gallery, target, 50, cells=cells)
        assert torch.equal(full.ranks, dense_ranks(scores, target))
        assert [full.columns(q) for q in range(q_count)] == dense_top(scores, 50)
        without = rank(query, gallery, target, 50, excluded=reference, cells=cells)
        assert torch.equal(without.ranks, dense_ranks(scores, target, removed))
        assert [without.columns(q) for q in range(q_count)] == dense_top(scores, 50, removed)
        subset = rank(query, gallery, target, 3, excluded=reference, members=members, cells=cells)
        assert torch.equal(subset.ranks, dense_ranks(scores, target, outside))
        assert [subset.columns(q) for q in range(q_count)] == dense_top(scores, 3, outside)
    if features == "coarse":
        assert (scores == scores.gather(1, target[:, None])).sum() > 5 * q_count  # ties were there to break
