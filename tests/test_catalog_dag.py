"""The whole DAG on real catalogue photos (a shop's own catalogue: free categories, no annotated triplets) with
`dvc repro`, then the same DAG untrained: training must beat it on the held-out generated queries."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.evaluation.context import context_line
from pipeline.paths import Paths
from tests.conftest import REALDATA
from tests.support.browser import (
    browser_page,
    expected_recall,
    only_localhost,
    playwright_api,
    screenshot,
    shown_recall,
)
from tests.support.dag import ALL_STAGES, TINY_PARAMS, ran, run, tiny_copy
from tests.support.serve import cli_answer, search_from_gallery, serving

PRODUCTS = REALDATA / "products"
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not PRODUCTS.is_dir(), reason=f"no real product photos at {PRODUCTS}")]

TEXT = "is black instead of white"
CATEGORIES = ["Topwear", "Shoes", "Bags", "Watches", "Bottomwear", "Sandal"]  # Sandal: about 9 val images
SHOP_PARAMS = {
    **TINY_PARAMS,
    "data": {"source": "catalog", "root": "datasets/products", "categories": CATEGORIES,
             "catalog": {"image_column": "id", "category_column": "subCategory", "title_column": "productDisplayName",
                         "split_column": "", "attribute_columns": ["gender", "baseColour", "season", "usage",
                                                                   "articleType"], "val_fraction": 0.25}},
    "gallery": {"root": "datasets/products"},
    "triplets": {"generated_per_category": 150, "generated_val_per_category": 40},
    "stage1": {"epochs": 5, "batch_size": 64},
    "stage2": {"epochs": 3, "batch_size": 64, "static_negatives": 64},
}


@pytest.fixture(scope="module")
def shop_repo(tmp_path_factory: pytest.TempPathFactory, warm_stages: dict) -> Path:
    root = tiny_copy(tmp_path_factory.mktemp("shop"), SHOP_PARAMS)
    (root / "datasets").mkdir()
    (root / "datasets" / "products").symlink_to(PRODUCTS)
    assert ran(run(["dvc", "repro"], root, env=warm_stages).stdout) == ALL_STAGES
    return root


def test_metrics_are_per_free_category_and_say_the_queries_were_generated(shop_repo: Path):
    metrics = json.loads(Paths(shop_repo).eval_metrics.read_text())
    assert set(CATEGORIES) <= set(metrics) and "average" in metrics
    assert metrics["val_queries"].startswith("generated from the catalogue's attributes")
    for category in CATEGORIES:
        assert metrics[category]["queries"] > 0 and metrics[category]["dropped"] == 0
    captions = json.loads((shop_repo / "data/captions/report.json").read_text())
    assert captions["images"] > 900 and captions.get("corrupt", 0) == 0


def test_recall_is_shown_beside_chance_and_stage1_and_a_tiny_category_is_marked(shop_repo: Path):
    """On real photos: a category of about nine val images scores R@10 near 100 under any model; the context says
    so, and the averages say what they average."""
    context = json.loads(Paths(shop_repo).eval_context.read_text())
    val = pd.read_parquet(shop_repo / "data/captions/captions.parquet").query("split == 'val'")
    for category in CATEGORIES:
        gallery = int((val["category"] == category).sum())
        assert context[category]["gallery"] == gallery
        assert context[category]["chance"]["R@10"] == round(100 * min(10, gallery) / gallery, 4)
        assert context[category]["small"] == (gallery <= 20)
    assert context["Sandal"]["small"] and not context["Topwear"]["small"]
    averages = context["average"]
    assert averages["macro"]["categories"] == len(CATEGORIES)
    assert averages["macro_without_small"]["categories"] == sum(not context[c]["small"] for c in CATEGORIES)
    assert averages["macro_without_small"]["chance"]["R@10"] < averages["macro"]["chance"]["R@10"]
    line = context_line("catalog", context)  # what the `evaluate` stage printed
    marked = line.split("with chance R@10 >= 50% (", 1)[1].split(")", 1)[0].split(", ")
    assert set(marked) == {c for c in CATEGORIES if context[c]["small"]} and "without them R@10" in line


def first_val_reference(root: Path) -> str:
    return str(pd.read_parquet(Paths(root).val_rankings)["reference"].iloc[0])


def test_search_answers_from_the_real_catalogue(shop_repo: Path):
    expected = cli_answer(shop_repo, first_val_reference(shop_repo), TEXT, 5)
    assert len(expected["hits"]) == 5 and first_val_reference(shop_repo) not in [h["name"] for h in expected["hits"]]


def test_the_page_answers_like_search_on_the_real_catalogue(shop_repo: Path, tmp_path: Path):
    playwright_api()  # skips, with its reason, where the browser or playwright is missing
    reference = first_val_reference(shop_repo)
    expected = cli_answer(shop_repo, reference, TEXT, 5)
    with serving(shop_repo, tmp_path / "serve.log") as url, browser_page(only_localhost) as (tab, refused, errors):
        names = search_from_gallery(tab, url, reference, TEXT, 5)
        screenshot(tab, tmp_path, "search-real-catalogue.png")
        tab.click("#nav-queries")
        shown = shown_recall(tab)
        small = tab.eval_on_selector_all("#recall-table tr.small", "rows => rows.map(row => row.dataset.category)")
        screenshot(tab, tmp_path, "recall-real-catalogue.png")
    assert names == [hit["name"] for hit in expected["hits"]]
    assert shown == expected_recall(Paths(shop_repo)) and "Sandal" in small and "Topwear" not in small
    assert refused == [] and errors == []


def test_training_beats_the_untrained_model_on_held_out_queries(shop_repo: Path, warm_stages: dict):
    """Last in this file: it leaves the workspace with the untrained model."""
    trained = json.loads(Paths(shop_repo).eval_metrics.read_text())["average"]
    run(["git", "add", "-A"], shop_repo)
    run(["git", "commit", "-qm", "trained"], shop_repo)
    untrained_run = run(["dvc", "exp", "run", "-S", "stage1.epochs=0", "-S", "stage2.epochs=0"], shop_repo,
                        env=warm_stages)
    assert {"stage1", "stage2", "evaluate"} <= ran(untrained_run.stdout)
    untrained = json.loads(Paths(shop_repo).eval_metrics.read_text())["average"]
    # 200 held-out queries, so one query is 0.5 points; training on another CPU moves the trained numbers by a few
    # points (floating-point sums differ), so the margins leave room for that and still fail if training is broken
    assert trained["R@10"] > untrained["R@10"] + 10, (trained, untrained)
    assert trained["mean"] > untrained["mean"] + 5, (trained, untrained)
