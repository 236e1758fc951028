"""The whole DAG on real catalogue photos (a shop's own catalogue: free categories, no annotated triplets) with
`dvc repro`, then the same DAG untrained: training must beat it on the held-out generated queries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.paths import Paths
from tests.conftest import REALDATA
from tests.support.dag import ALL_STAGES, TINY_PARAMS, ran, run, tiny_copy

PRODUCTS = REALDATA / "products"
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not PRODUCTS.is_dir(), reason=f"no real product photos at {PRODUCTS}")]

CATEGORIES = ["Topwear", "Shoes", "Bags", "Watches", "Bottomwear"]
SHOP_PARAMS = {
    **TINY_PARAMS,
    "data": {"source": "catalog", "root": "datasets/products", "categories": CATEGORIES,
             "catalog": {"image_column": "id", "category_column": "subCategory", "title_column": "productDisplayName",
                         "split_column": "", "attribute_columns": ["gender", "baseColour", "season", "usage",
                                                                   "articleType"], "val_fraction": 0.25}},
    "triplets": {"generated_per_category": 150, "generated_val_per_category": 40},
    "stage1": {"epochs": 5, "batch_size": 64},
    "stage2": {"epochs": 3, "batch_size": 64, "static_negatives": 64},
}


@pytest.fixture(scope="module")
def shop_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tiny_copy(tmp_path_factory.mktemp("shop"), SHOP_PARAMS)
    (root / "datasets").mkdir()
    (root / "datasets" / "products").symlink_to(PRODUCTS)
    assert ran(run(["dvc", "repro"], root).stdout) == ALL_STAGES
    return root


def test_metrics_are_per_free_category_and_say_the_queries_were_generated(shop_repo: Path):
    metrics = json.loads(Paths(shop_repo).eval_metrics.read_text())
    assert set(CATEGORIES) <= set(metrics) and "average" in metrics
    assert metrics["val_queries"].startswith("generated from the catalogue's attributes")
    for category in CATEGORIES:
        assert metrics[category]["queries"] > 0 and metrics[category]["dropped"] == 0
    captions = json.loads((shop_repo / "data/captions/report.json").read_text())
    assert captions["images"] > 900 and captions.get("corrupt", 0) == 0


def test_training_beats_the_untrained_model_on_held_out_queries(shop_repo: Path):
    trained = json.loads(Paths(shop_repo).eval_metrics.read_text())["average"]
    run(["git", "add", "-A"], shop_repo)
    run(["git", "commit", "-qm", "trained"], shop_repo)
    untrained_run = run(["dvc", "exp", "run", "-S", "stage1.epochs=0", "-S", "stage2.epochs=0"], shop_repo)
    assert {"stage1", "stage2", "evaluate"} <= ran(untrained_run.stdout)
    untrained = json.loads(Paths(shop_repo).eval_metrics.read_text())["average"]
    assert trained["R@10"] > untrained["R@10"] + 10, (trained, untrained)
    assert trained["mean"] > untrained["mean"] + 10, (trained, untrained)


def test_search_answers_from_the_real_catalogue(shop_repo: Path):
    import subprocess
    import sys

    import pandas as pd

    reference = str(pd.read_parquet(Paths(shop_repo).val_rankings)["reference"].iloc[0])
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "search", "--root", str(shop_repo), "--image",
                             reference, "--text", "black instead of white", "--k", "5", "--json"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)[0]["hits"]) == 5
