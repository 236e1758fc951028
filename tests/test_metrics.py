import pytest
import torch

from pipeline.evaluation.metrics import MISSED, cirr_summary, fashioniq_summary, recall_at_k, target_ranks, top_k


def test_ranks_and_recall_on_hand_made_scores():
    scores = torch.tensor([
        [0.9, 0.1, 0.5, 0.3],   # target 0 is first      -> rank 0
        [0.9, 0.1, 0.5, 0.3],   # target 2 is second     -> rank 1
        [0.9, 0.1, 0.5, 0.3],   # target 1 is last       -> rank 3
    ])
    ranks = target_ranks(scores, torch.tensor([0, 2, 1]))
    assert ranks.tolist() == [0, 1, 3]
    assert recall_at_k(ranks, [1, 2, 4]) == pytest.approx({1: 100 / 3, 2: 200 / 3, 4: 100.0})


def test_ties_count_against_the_target():
    scores = torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.7, 0.7]])
    ranks = target_ranks(scores, torch.tensor([0, 2]))
    assert ranks.tolist() == [2, 1]
    assert recall_at_k(ranks, [1]) == {1: 0.0}


def test_reference_equal_to_target_is_ranked_like_any_image():
    # FashionIQ keeps the reference in the gallery; when it is also the target it simply ranks where it scores.
    scores = torch.tensor([[0.8, 0.9, 0.1]])
    assert target_ranks(scores, torch.tensor([0])).tolist() == [1]


def test_fashioniq_summary_schema():
    summary = fashioniq_summary({"dress": {10: 20.0, 50: 40.0}, "shirt": {10: 30.0, 50: 60.0},
                                 "toptee": {10: 10.0, 50: 50.0}})
    assert summary["dress"] == {"R@10": 20.0, "R@50": 40.0}
    assert summary["average"] == {"R@10": 20.0, "R@50": 50.0, "mean": 35.0}
    assert set(summary) == {"dress", "shirt", "toptee", "average"}


def test_removing_the_reference_moves_the_target_up():
    # CIRR: the reference (column 0) scores highest but is removed from the ranking.
    scores = torch.tensor([[0.9, 0.5, 0.7, 0.1]])
    excluded = torch.tensor([[True, False, False, False]])
    assert target_ranks(scores, torch.tensor([2]), excluded).tolist() == [0]
    assert target_ranks(scores, torch.tensor([1]), excluded).tolist() == [1]
    assert target_ranks(scores, torch.tensor([2])).tolist() == [1]  # FashionIQ keeps it: one place lower


def test_a_target_equal_to_the_removed_reference_is_never_retrieved():
    # As in CLIP4Cir's CIRR code: removing the reference removes the only positive, whatever K.
    scores = torch.tensor([[0.9, 0.5], [0.1, 0.8]])
    excluded = torch.eye(2, dtype=torch.bool)
    ranks = target_ranks(scores, torch.tensor([0, 0]), excluded)
    assert ranks.tolist() == [MISSED, 0]
    assert recall_at_k(ranks, [1, 1000]) == {1: 50.0, 1000: 50.0}


def test_ties_with_a_removed_reference_still_count_against_the_target():
    scores = torch.tensor([[0.5, 0.5, 0.5, 0.2]])
    excluded = torch.tensor([[True, False, False, False]])
    assert target_ranks(scores, torch.tensor([1]), excluded).tolist() == [1]


def test_subset_recall_ranks_only_the_image_set():
    # Gallery of 6; the query's img_set is columns 1, 2, 4 plus its reference 0. Column 3 outscores the target
    # but is outside the set, so the target (4) is second within the set, behind 2.
    scores = torch.tensor([[0.99, 0.1, 0.8, 0.9, 0.7, 0.95]])
    inside = torch.tensor([[True, True, True, False, True, False]])
    reference = torch.tensor([[True, False, False, False, False, False]])
    ranks = target_ranks(scores, torch.tensor([4]), ~inside | reference)
    assert ranks.tolist() == [1]
    assert recall_at_k(ranks, [1, 2, 3]) == {1: 0.0, 2: 100.0, 3: 100.0}
    assert target_ranks(scores, torch.tensor([4]), reference).tolist() == [3]  # full gallery: 5, 3, 2 ahead


def test_top_k_skips_excluded_columns_and_breaks_ties_by_gallery_order():
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.7], [0.1, 0.2, 0.3, 0.4]])
    excluded = torch.tensor([[True, False, False, False], [False, True, True, True]])
    assert top_k(scores, 2, excluded) == [[3, 1], [0]]
    assert top_k(scores, 3) == [[0, 3, 1], [3, 2, 1]]


def test_cirr_summary_schema_and_headline():
    summary = cirr_summary({1: 30.0, 5: 60.0, 10: 70.0, 50: 90.0}, {1: 50.0, 2: 75.0, 3: 90.0})
    assert list(summary) == ["R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3", "mean"]
    assert summary["mean"] == 55.0
