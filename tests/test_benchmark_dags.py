"""End to end on the real benchmarks' layouts: `dvc repro` of the whole DAG on a tiny FashionIQ download (with a
user's CLIP checkpoint file and CLIP4Cir's targetpad) and on a tiny CIRR download, switched by params alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.config import ModelParams
from pipeline.evaluation.metrics import CIRR_KS, CIRR_SUBSET_KS
from pipeline.models.clip import create_clip
from pipeline.paths import Paths
from tests.support.benchmark_layouts import cirr_download, fashioniq_download
from tests.support.dag import ALL_STAGES, TINY_PARAMS, ran, run, tiny_copy

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's open_clip checkpoint file (a state dict), given to the pipeline as model.pretrained=<path>."""
    path = tmp_path_factory.mktemp("weights") / "my-clip.pt"
    torch.save(create_clip(ModelParams(arch="fciq-tiny"), seed=7).state_dict(), path)
    return path


def test_fashioniq_download_runs_through_the_dag(tmp_path: Path, tiny_catalogue: Path, clip_checkpoint: Path,
                                                 warm_stages: dict):
    dataset = tmp_path / "fashioniq"
    absent = fashioniq_download(tiny_catalogue, dataset, categories=("dress", "toptee"))
    model = {"arch": "fciq-tiny", "pretrained": str(clip_checkpoint), "preprocess": "targetpad",
             "target_ratio": 1.25}
    data = {"source": "fashioniq", "root": str(dataset), "categories": ["dress", "toptee"]}
    gallery = {"root": str(dataset)}
    root = tiny_copy(tmp_path / "repo", {**TINY_PARAMS, "data": data, "gallery": gallery, "model": model})
    result = run(["dvc", "repro"], root, env=warm_stages)
    assert ran(result.stdout) == ALL_STAGES

    metrics = json.loads(Paths(root).eval_metrics.read_text())
    assert set(metrics) == {"dress", "toptee", "average"}
    context = json.loads(Paths(root).eval_context.read_text())
    for category in ("dress", "toptee"):
        gallery = context[category]["gallery"]  # the category's val images that could be read (dead links gone)
        assert gallery == len(json.loads((dataset / f"image_splits/split.{category}.val.json").read_text())) \
            - absent.get(f"{category}.val", 0)
        assert context[category]["chance"]["R@10"] == round(100 * min(10, gallery) / gallery, 4)
        assert context[category]["queries"] == metrics[category]["queries"] > 0
    captioned = json.loads((root / "data/captions/report.json").read_text())
    dropped = json.loads((root / "data/triplets/report.json").read_text())
    for key, count in absent.items():  # dead links: counted, their pairs dropped, the run goes on
        assert captioned["missing"][f"{key}.images_missing"] == count
    assert sum(dropped["dataset"][f"{key}.pairs_dropped"] for key in absent) > 0
    assert sum(dropped["pairs_dropped"][split]["missing image"] for split in ("train", "val")) == \
        sum(dropped["dataset"][f"{key}.pairs_dropped"] for key in absent)
    assert metrics["dress"]["dropped"] == 0  # pairs without their images never reach evaluation
    assert json.loads((Paths(root).stage1_dir / "model.json").read_text())["target_ratio"] == 1.25
    assert json.loads((Paths(root).submissions / "index.json").read_text())["files"] == []


def test_cirr_download_runs_through_the_dag_and_writes_test_server_files(tmp_path: Path, tiny_catalogue: Path,
                                                                         warm_stages: dict):
    annotations = cirr_download(tiny_catalogue, tmp_path / "cirr_dataset")
    # CIRR ships no attribute tags, so the catalog backend writes no captions: stage 2 starts from the base model.
    params = {**TINY_PARAMS, "data": {"source": "cirr", "root": str(annotations)},
              "gallery": {"root": str(annotations)},
              "stage1": {**TINY_PARAMS["stage1"], "epochs": 0}}
    root = tiny_copy(tmp_path / "repo", params)
    result = run(["dvc", "repro"], root, env=warm_stages)
    assert ran(result.stdout) == ALL_STAGES

    metrics = json.loads(Paths(root).eval_metrics.read_text())
    assert list(metrics) == [*(f"R@{k}" for k in CIRR_KS), *(f"Rsubset@{k}" for k in CIRR_SUBSET_KS), "mean",
                             "queries", "dropped"]
    assert metrics["mean"] == pytest.approx((metrics["R@5"] + metrics["Rsubset@1"]) / 2, abs=1e-3)

    test1 = {str(e["pairid"]): e for e in json.loads((annotations / "captions/cap.rc2.test1.json").read_text())}
    gallery = json.loads((annotations / "image_splits/split.rc2.test1.json").read_text())
    recall = json.loads((Paths(root).submissions / "cirr-test1-recall.json").read_text())
    subset = json.loads((Paths(root).submissions / "cirr-test1-recall_subset.json").read_text())
    assert (recall.pop("version"), recall.pop("metric")) == ("rc2", "recall")
    assert (subset.pop("version"), subset.pop("metric")) == ("rc2", "recall_subset")
    assert set(recall) == set(subset) == set(test1)
    for pair_id, names in recall.items():
        reference = test1[pair_id]["reference"]
        assert len(names) == min(50, len(gallery) - 1) and reference not in names and set(names) <= set(gallery)
        members = set(test1[pair_id]["img_set"]["members"]) - {reference}
        assert len(subset[pair_id]) == 3 and set(subset[pair_id]) <= members
