"""The benchmarks' protocols on hand-made rankings, where the right numbers are known by hand."""

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import ModelParams
from pipeline.evaluation.protocols import (
    QuerySet,
    Ranking,
    cirr_metrics,
    cirr_submissions,
    fashioniq_metrics,
    headline,
    top_results,
)
from pipeline.models.clip import create_model, tokenizer_for

NAMES = np.array(["a", "b", "c", "d", "e", "f", "g"])


def _cirr_ranking(scores, reference, target, subsets, pair_ids=("11", "12")) -> Ranking:
    triplets = pd.DataFrame({"pair_id": list(pair_ids), "subset": subsets})
    target = None if target is None else torch.tensor(target)
    return Ranking("cirr", triplets, NAMES, torch.tensor(scores), torch.eye(len(NAMES)), torch.tensor(reference),
                   target)


# Query 0: reference a scores highest (removed under CIRR's protocol); target c comes after b. Its img_set is
# a, c, d, e, f, g, and within it c is first. Query 1: reference b; target g scores lowest of all, so it is 6th
# of the 6 left, and 5th of the 5 left in its img_set.
SCORES = [[0.99, 0.9, 0.8, 0.1, 0.2, 0.3, 0.4],
          [0.5, 0.99, 0.6, 0.7, 0.8, 0.9, 0.05]]
SUBSETS = [["a", "c", "d", "e", "f", "g"], ["b", "f", "g", "c", "d", "e"]]


def test_cirr_recall_removes_the_reference_and_subset_recall_ranks_within_the_img_set():
    ranking = _cirr_ranking(SCORES, [0, 1], [2, 6], SUBSETS)
    summary, curve = cirr_metrics([ranking], [1, 5, 10, 50])
    # query 0: target rank 1 (b ahead; a removed) -> hit at 5, 10, 50, miss at 1. query 1: rank 5 of 6 -> hit
    # at 10, 50 only.
    assert summary["R@1"] == 0.0 and summary["R@5"] == 50.0 and summary["R@10"] == 100.0
    # subset, query 0: c (0.8) beats d, e, f, g -> rank 0. query 1: f, c, d, e all above g -> rank 4: miss.
    assert summary["Rsubset@1"] == 50.0 and summary["Rsubset@3"] == 50.0
    assert summary["mean"] == pytest.approx((50.0 + 50.0) / 2)
    assert [row["k"] for row in curve] == [1, 5, 10, 50] and curve[1]["cirr"] == curve[1]["average"] == 50.0


def test_fashioniq_protocol_keeps_the_reference_in_the_gallery():
    ranking = _cirr_ranking(SCORES, [0, 1], [2, 6], SUBSETS)
    summary, _ = fashioniq_metrics([Ranking("dress", ranking.triplets, NAMES, ranking.query, ranking.gallery,
                                            ranking.reference, ranking.target)], [10, 50])
    # query 0's target is now 3rd (a and b ahead), query 1's is last of 7: both within 10.
    assert summary["dress"] == {"R@10": 100.0, "R@50": 100.0}
    assert headline("fashioniq", [Ranking("dress", ranking.triplets, NAMES, ranking.query, ranking.gallery,
                                          ranking.reference, ranking.target)])["R@10"] == 100.0


def test_cirr_submission_files_have_the_servers_format():
    ranking = _cirr_ranking(SCORES, [0, 1], None, SUBSETS)
    files = cirr_submissions(ranking)
    recall, subset = files["recall"], files["recall_subset"]
    assert (recall["version"], recall["metric"]) == ("rc2", "recall")
    assert (subset["version"], subset["metric"]) == ("rc2", "recall_subset")
    assert recall["11"] == ["b", "c", "g", "f", "e", "d"]  # top-50 of 6 left: reference a removed
    assert subset["11"] == ["c", "g", "f"] and subset["12"] == ["f", "e", "d"]  # top-3 of the set, no reference
    assert set(recall) == {"version", "metric", "11", "12"}


def test_query_set_ranks_each_category_against_its_own_gallery():
    # "x" is listed under shirt and toptee (as about 3% of FashionIQ's images are): each category's ranking must
    # use its own gallery columns.
    gallery = pd.DataFrame({"name": ["x", "y", "z", "x", "w"], "category": ["shirt", "shirt", "shirt", "toptee",
                                                                          "toptee"]})
    triplets = pd.DataFrame({"category": ["shirt", "toptee"], "reference": ["x", "w"], "target": ["z", "x"],
                             "caption1": ["is red", "is blue"], "caption2": ["", ""],
                             "query_text": ["Is red", "Is blue"], "subset": [[], []]})
    queries = QuerySet(gallery, triplets)
    model = create_model(ModelParams(arch="fciq-tiny"), seed=0).eval()
    features = torch.nn.functional.normalize(torch.randn(5, model.embed_dim), dim=-1)
    shirt, toptee = queries.rankings(model, tokenizer_for("fciq-tiny"), features, "composed", 8)
    assert shirt.names.tolist() == ["x", "y", "z"] and toptee.names.tolist() == ["x", "w"]
    assert shirt.names[shirt.target.numpy()].tolist() == ["z"]
    assert toptee.names[toptee.reference.numpy()].tolist() == ["w"]
    image_only = queries.rankings(model, tokenizer_for("fciq-tiny"), features, "image", 8)
    assert torch.allclose(image_only[1].query @ image_only[1].gallery.T, features[4:5] @ features[3:5].T)


def test_queries_whose_images_are_missing_are_dropped_and_counted(tmp_path):
    gallery = pd.DataFrame({"name": ["a", "b", "c"], "category": ["dress"] * 3})
    pd.DataFrame({"category": ["dress"] * 3, "reference": ["a", "a", "gone"], "target": ["b", "gone", "c"],
                  "caption1": ["x"] * 3, "caption2": [""] * 3, "query_text": ["x"] * 3, "subset": [[]] * 3}
                 ).to_parquet(tmp_path / "val.parquet")
    queries = QuerySet.build(gallery, tmp_path / "val.parquet")
    assert len(queries.triplets) == 1 and queries.dropped == {"dress": 2}


def test_top_results_list_each_querys_best_ten_and_its_targets_rank():
    names = np.array([f"g{i}" for i in range(12)])
    scores = torch.arange(12, dtype=torch.float32).flip(0)[None, :].repeat(2, 1)  # g0 best ... g11 worst
    triplets = pd.DataFrame({"triplet_id": ["q0", "q1"], "source": ["generated"] * 2, "reference": ["g5", "g6"],
                             "target": ["g2", "g11"], "caption1": ["x", "y"], "caption2": ["", ""],
                             "query_text": ["X", "Y"]})
    ranking = Ranking("dress", triplets, names, scores, torch.eye(12), torch.tensor([5, 6]), torch.tensor([2, 11]))
    table = top_results("fashioniq", [ranking])
    assert list(table["top"].iloc[0]) == [f"g{i}" for i in range(10)]  # FashionIQ keeps the reference
    assert table["target_rank"].tolist() == [3, 12]
    cirr = top_results("cirr", [ranking])
    assert "g5" not in list(cirr["top"].iloc[0]) and cirr["target_rank"].tolist() == [3, 11]
