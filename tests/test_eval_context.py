"""Recall in context (pipeline/evaluation/context.py) on hand-made rankings: chance levels, the mark on galleries
too small to say anything, the three averages and the stage-1 baseline from static features."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import PipelineError
from pipeline.evaluation.context import chance_recall, context_line, recall_context, stage1_sum_rankings
from pipeline.evaluation.metrics import recall_at_k
from pipeline.evaluation.protocols import Ranking, cirr_metrics, fashioniq_metrics
from pipeline.evaluation.ranking import rank
from pipeline.features.table import write_features
from pipeline.models.composition import normalised_sum


def _ranking(category: str, gallery: int, queries: int, hits_at_1: int, seed: int) -> Ranking:
    """`queries` queries over `gallery` images; the first `hits_at_1` rank their target first, the rest last."""
    rng = np.random.default_rng(seed)
    scores = torch.from_numpy(rng.uniform(0, 0.5, (queries, gallery)).astype(np.float32))
    target = torch.from_numpy(rng.integers(0, gallery, queries))
    scores[torch.arange(queries), target] = torch.where(torch.arange(queries) < hits_at_1, 1.0, -1.0)
    names = np.array([f"{category}{i}" for i in range(gallery)])
    triplets = pd.DataFrame({"triplet_id": [f"{category}-q{i}" for i in range(queries)]})
    reference = torch.from_numpy(rng.integers(0, gallery, queries))
    return Ranking(category, triplets, names, scores, torch.eye(gallery), reference, target)


def test_chance_is_what_a_random_ranking_scores():
    assert chance_recall(torch.tensor([100, 8, 40]), (10, 50)) == pytest.approx(
        {10: (10 / 100 + 1 + 10 / 40) / 3 * 100, 50: (50 / 100 + 1 + 1) / 3 * 100})
    rng = torch.Generator().manual_seed(0)
    scores = torch.rand((4000, 100), generator=rng)
    measured = recall_at_k(rank(scores, torch.eye(100), torch.randint(0, 100, (4000,), generator=rng), 1).ranks,
                           [10, 50])
    assert measured[10] == pytest.approx(10.0, abs=1.5) and measured[50] == pytest.approx(50.0, abs=2.5)


def test_a_tiny_category_is_marked_and_each_average_says_what_it_averages():
    trained = [_ranking("dress", 200, 60, 30, 0), _ranking("belt", 8, 4, 4, 1)]
    untrained = [_ranking("dress", 200, 60, 6, 2), _ranking("belt", 8, 4, 1, 3)]
    summary, _ = fashioniq_metrics(trained, [10, 50])
    context = recall_context("catalog", trained, summary, untrained)

    dress, belt = context["dress"], context["belt"]
    assert (dress["gallery"], dress["queries"], belt["gallery"], belt["queries"]) == (200, 60, 8, 4)
    assert dress["chance"] == {"R@10": 5.0, "R@50": 25.0} and belt["chance"] == {"R@10": 100.0, "R@50": 100.0}
    assert not dress["small"] and belt["small"]
    assert dress["R@10"] == 50.0 and belt["R@10"] == 100.0  # belt's last-ranked targets are still in its top 10
    assert dress["stage1_sum"]["R@10"] == 10.0 and belt["stage1_sum"]["R@10"] == 100.0

    averages = context["average"]
    assert averages["macro"]["R@10"] == 75.0 and averages["macro"]["categories"] == 2
    assert averages["macro"]["R@10"] == summary["average"]["R@10"]  # the same number as eval.json's headline
    assert averages["over_queries"]["R@10"] == pytest.approx((50 * 60 + 100 * 4) / 64, abs=1e-4)
    assert averages["over_queries"]["queries"] == 64
    assert averages["macro_without_small"]["R@10"] == 50.0 and averages["macro_without_small"]["categories"] == 1
    assert averages["macro_without_small"]["chance"]["R@10"] == 5.0
    assert averages["macro"]["chance"]["R@10"] == 52.5 and averages["macro"]["stage1_sum"]["R@10"] == 55.0

    line = context_line("catalog", context)
    assert "R@10 75.00" in line and "over all 64 queries R@10 53.12" in line
    assert "1 category with chance R@10 >= 50% (belt): without them R@10 50.00 (chance 5.00" in line


def test_no_small_category_leaves_the_line_without_a_mark():
    trained = [_ranking("dress", 200, 60, 30, 0)]
    summary, _ = fashioniq_metrics(trained, [10, 50])
    context = recall_context("fashioniq", trained, summary, trained)
    assert context["average"]["macro_without_small"] == context["average"]["macro"]
    assert "chance R@10 >=" not in context_line("fashioniq", context)


def test_cirr_chance_leaves_out_the_reference_and_counts_each_img_set():
    names = np.array(list("abcdefg"))
    triplets = pd.DataFrame({"triplet_id": ["1", "2"], "subset": [["a", "b", "c"], ["a", "b", "c", "d", "e", "f"]]})
    ranking = Ranking("cirr", triplets, names, torch.rand(2, 7), torch.eye(7), torch.tensor([0, 1]),
                      torch.tensor([1, 2]))
    summary, _ = cirr_metrics([ranking], [1, 5, 10, 50])
    context = recall_context("cirr", [ranking], summary, [ranking])
    assert context["gallery"] == 7 and context["queries"] == 2
    assert context["chance"]["R@1"] == pytest.approx(100 / 6, abs=1e-4) and context["chance"]["R@10"] == 100.0
    # the img_sets without their references hold 2 and 5 images
    assert context["chance"]["Rsubset@1"] == pytest.approx((1 / 2 + 1 / 5) / 2 * 100, abs=1e-4)
    assert context["small"] and context["stage1_sum"]["mean"] == summary["mean"]
    assert "Rsubset@1" in context_line("cirr", context)


def test_the_stage1_baseline_sums_static_features_found_by_name_and_query(tmp_path):
    rng = np.random.default_rng(0)
    ranking = _ranking("dress", 5, 3, 1, 0)
    images = rng.normal(size=(7, 4)).astype(np.float32)
    # the table lists train images too, and val images in another order than the ranking's columns
    image_ids = pd.DataFrame({"name": ["t0", "dress3", "dress0", "dress4", "dress1", "t1", "dress2"],
                              "category": "dress", "split": ["train", *["val"] * 4, "train", "val"]})
    texts = rng.normal(size=(4, 4)).astype(np.float32)
    query_ids = pd.DataFrame({"triplet_id": ["other", "dress-q2", "dress-q0", "dress-q1"], "split": "val"})
    write_features(tmp_path / "images.parquet", image_ids, images)
    write_features(tmp_path / "queries.parquet", query_ids, texts)

    (scored,) = stage1_sum_rankings([ranking], tmp_path / "images.parquet", tmp_path / "queries.parquet")
    gallery = F.normalize(torch.from_numpy(images[[2, 4, 6, 1, 3]]), dim=-1)
    query = normalised_sum(gallery[ranking.reference], torch.from_numpy(texts[[2, 3, 1]]))
    torch.testing.assert_close(scored.query @ scored.gallery.T, query @ gallery.T)
    assert scored.target is ranking.target and scored.triplets is ranking.triplets

    write_features(tmp_path / "queries.parquet", query_ids.iloc[:3], texts[:3])
    with pytest.raises(PipelineError, match=r"queries.parquet has no feature for query 'dress-q1'; run `dvc repro`"):
        stage1_sum_rankings([ranking], tmp_path / "images.parquet", tmp_path / "queries.parquet")
