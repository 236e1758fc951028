import pytest
import torch

from pipeline.metrics import fashioniq_summary, recall_at_k, target_ranks


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
