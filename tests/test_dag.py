"""End to end: the real DVC DAG on a tiny configuration, in a temporary copy of the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.captioning.vllm_server import free_port
from pipeline.config import NegativesParams, Params
from pipeline.models.clip import load_checkpoint, tokenizer_for
from pipeline.negatives import mine
from pipeline.paths import Paths
from tests.support.dag import ALL_STAGES, TINY_PARAMS, ran, restore_reference_run, run, set_params, tiny_copy
from tests.support.vllm_env import SERVE_ARGS, SERVE_COMMAND, SERVER_ENV, needs_vllm

pytestmark = pytest.mark.e2e


def test_repro_writes_metrics_in_the_contract_schema(tiny_repo: Path):
    metrics = json.loads(Paths(tiny_repo).eval_metrics.read_text())
    assert set(metrics) == {"dress", "shirt", "toptee", "average"}
    context = json.loads(Paths(tiny_repo).eval_context.read_text())
    for category in ("dress", "shirt", "toptee"):
        assert set(metrics[category]) == {"R@10", "R@50", "queries", "dropped"}
        assert metrics[category]["queries"] == 5 * 2 and metrics[category]["dropped"] == 0  # 5 families x (3 - 1)
        gallery = len(json.loads((tiny_repo / f"data/synthetic/image_splits/split.{category}.val.json").read_text()))
        assert gallery == 5 * 3 + 6  # the val families' images and the distractors
        assert context[category]["gallery"] == gallery and context[category]["queries"] == 10
        assert context[category]["chance"] == {"R@10": round(1000 / gallery, 4), "R@50": 100.0}
        assert context[category]["R@10"] == metrics[category]["R@10"] and not context[category]["small"]
        assert set(context[category]["stage1_sum"]) == {"R@10", "R@50"}
    assert set(metrics["average"]) == {"R@10", "R@50", "mean"}
    assert {k: context["average"]["macro"][k] for k in ("R@10", "R@50", "mean")} == metrics["average"]
    curve = json.loads(Paths(tiny_repo).recall_curve.read_text())
    assert [row["k"] for row in curve] == sorted(row["k"] for row in curve)
    for live in ("dvclive/stage1", "dvclive/stage2"):
        assert (tiny_repo / live / "plots" / "metrics" / "train" / "loss.tsv").is_file()


def test_second_repro_runs_nothing_and_warns_of_nothing(tiny_repo: Path):
    again = run(["dvc", "repro"], tiny_repo)
    assert ran(again.stdout) == set()
    assert "WARNING" not in again.stdout + again.stderr, again.stderr  # e.g. DVC's "... is empty." for a dep


def test_ablation_reruns_only_downstream_stages(tiny_repo: Path, warm_stages: dict):
    # false_negatives=target: the rule other than the default runs through mine and stage 2 too
    result = run(["dvc", "exp", "run", "-S", "negatives.k=2", "-S", "negatives.false_negatives=target"],
                 tiny_repo, env=warm_stages)
    assert ran(result.stdout) == {"mine", "stage2", "evaluate", "index"}
    diff = run(["dvc", "params", "diff", "--json"], tiny_repo).stdout
    change = json.loads(diff)["params.yaml"]["negatives.k"]
    assert (change["old"], change["new"]) == (4, 2)
    metrics = run(["dvc", "metrics", "diff", "--all", "--json"], tiny_repo).stdout
    assert "metrics/eval.json" in json.loads(metrics)
    evaluation_only = run(["dvc", "exp", "run", "-S", "eval.query=image"], tiny_repo, env=warm_stages)
    assert ran(evaluation_only.stdout) == {"evaluate"}


def test_unknown_param_stops_with_one_sentence_and_keeps_outputs(tiny_repo: Path):
    model = Paths(tiny_repo).stage2_dir / "model.pt"
    before = model.stat().st_mtime
    params = (tiny_repo / "params.yaml").read_text()
    try:
        (tiny_repo / "params.yaml").write_text(params.replace("negatives:\n", "negatives:\n  kk: 3\n"))
        result = run(["dvc", "repro"], tiny_repo, check=False)
    finally:
        (tiny_repo / "params.yaml").write_text(params)
    assert result.returncode != 0
    assert "error: params.yaml: unknown key 'negatives.kk'" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert model.stat().st_mtime == before


def test_a_missing_data_root_is_the_projects_sentence_not_dvcs(tiny_repo: Path):
    params = (tiny_repo / "params.yaml").read_text()
    try:
        (tiny_repo / "params.yaml").write_text(params.replace("root: data/synthetic", "root: datasets/nowhere"))
        result = run(["dvc", "repro"], tiny_repo, check=False)
    finally:
        (tiny_repo / "params.yaml").write_text(params)
    output = result.stderr + result.stdout
    assert result.returncode != 0
    assert "error: data.root = 'datasets/nowhere' does not exist; expected a FashionIQ-layout dataset" in output
    assert "Errno 2" not in output and "Traceback" not in output


def test_mining_with_same_caption_never_returns_an_attribute_twin(tiny_repo: Path, tmp_path: Path):
    """The mine stage on the tiny run's features, with captions rewritten to two kinds so that about half of every
    gallery twins each target: the default rule mines twins, `same_caption` none, and still k per triplet."""
    captions = pd.read_parquet(Paths(tiny_repo).captions)
    kind = {name: i % 2 for i, name in enumerate(sorted(set(captions["name"])))}
    captions["caption"] = captions["name"].map(lambda name: ["a red dress", "a blue dress"][kind[name]])
    triplets = pd.read_parquet(Paths(tiny_repo).triplets("train"))
    target_of = dict(zip(triplets["triplet_id"], triplets["target"], strict=True))

    def twins_mined(rule: str) -> int:
        paths = Paths(tmp_path / rule)
        for folder in ("data/embeddings", "data/triplets"):
            shutil.copytree(tiny_repo / folder, paths.root / folder)
        paths.captions_dir.mkdir(parents=True)
        captions.to_parquet(paths.captions)
        report = mine.run(Params(negatives=NegativesParams(k=4, false_negatives=rule)), paths)
        assert report["short_of_k"] == 0
        negatives = pd.read_parquet(paths.negatives)
        return sum(kind[name] == kind[target_of[triplet]]
                   for triplet, names in zip(negatives["triplet_id"], negatives["negatives"], strict=True)
                   for name in names)

    assert twins_mined("target") > 0
    assert twins_mined("same_caption") == 0


def _loss_curve(root: Path, stage: str) -> list[float]:
    rows = (root / "dvclive" / stage / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()[1:]
    return [float(row.split("\t")[-1]) for row in rows]


def test_stages_under_torchrun_with_two_gloo_processes_train_as_one_process(tiny_repo: Path, tmp_path: Path):
    """compute.processes: 2 runs stage 1 and stage 2 under torchrun (DDP, gloo on this CPU, features gathered across
    ranks): the same loss curves and weights as the single-process reference run, up to floating-point noise."""
    root = tmp_path / "ddp"
    shutil.copytree(tiny_repo, root, symlinks=True)
    restore_reference_run(root)
    reference = tmp_path / "reference"
    for stage in ("stage1", "stage2"):
        shutil.copytree(root / "models" / stage, reference / "models" / stage)
        shutil.copytree(root / "dvclive" / stage, reference / "dvclive" / stage)
    set_params(root, {"compute": {"processes": 2}})
    for stage in ("stage1", "stage2"):
        result = run(["dvc", "repro", "--force", "--single-item", stage], root)
        assert "running under torchrun with 2 processes" in result.stdout
        np.testing.assert_allclose(_loss_curve(root, stage), _loss_curve(reference, stage), rtol=1e-4)
    # Weights are compared through what they compute: Adam turns the noise in gradients that are zero in exact
    # arithmetic (an attention key bias cannot change a softmax) into full-size steps of weights that do nothing.
    # Those steps are about lr (1e-3) each, so outputs drift by a few thousandths (measured: 2.3e-3 with
    # target-anchored negatives), while the two stage-2 epochs here move them by about 0.17.
    pixels = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8)
    tokens = tokenizer_for("fciq-tiny")(["a red dress", "is blue with long sleeves", "has dots", "", "x", "shirt"])
    for stage in ("models/stage1", "models/stage2"):
        single, distributed = load_checkpoint(reference / stage).eval(), load_checkpoint(root / stage).eval()
        with torch.no_grad():
            for a, b in ((single.encode_images(pixels), distributed.encode_images(pixels)),
                         (single.encode_texts(tokens), distributed.encode_texts(tokens))):
                torch.testing.assert_close(b, a, rtol=0, atol=5e-3, msg=str(stage))

    # Two nodes, as docs/scale.md starts them: torchrun on each with one rendezvous (here both on loopback, one
    # process a node, one shared checkout); the stage sees it is under torchrun and trains as one process.
    set_params(root, {"compute": {"processes": 1}})
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--node-rank", str(rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
                               "--rdzv-id", "two-nodes", "-m", "stages.stage1"], cwd=root, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    np.testing.assert_allclose(_loss_curve(root, "stage1"), _loss_curve(reference, "stage1"), rtol=1e-4)


@needs_vllm
def test_whole_dag_with_captions_from_a_real_vllm_server(tmp_path: Path, tiny_llava: Path, warm_stages: dict):
    """`caption.backend: vllm` with no URL: the stage starts the real server, captions, stops it; `triplets` does the
    same to word generated triplets (`phrasing: mllm`); the DAG goes on."""
    caption = {"backend": "vllm", "model": str(tiny_llava), "image_size": 64, "max_tokens": 200,
               "serve_command": SERVE_COMMAND, "serve_args": SERVE_ARGS, "max_concurrency": 4, "startup_timeout": 300}
    triplets = {**TINY_PARAMS["triplets"], "phrasing": "mllm"}  # and the same model words generated triplets
    root = tiny_copy(tmp_path / "repo", {**TINY_PARAMS, "caption": caption, "triplets": triplets})
    result = run(["dvc", "repro"], root, env={**SERVER_ENV, **warm_stages})  # the stage that starts vLLM forked too
    assert ran(result.stdout) == ALL_STAGES
    made = json.loads((root / "data/triplets/report.json").read_text())
    assert made["train_generated"] > 0 and made["phrased_by_llm"] + made["phrasing_failed"] == made["train_generated"]
    report = json.loads((root / "data/captions/report.json").read_text())
    assert report["captioner"]["backend"] == "vllm" and report["captioner"]["versions"]["vllm"].startswith("0.")
    assert report["captioned"] > 0 and report["captioned"] + report.get("failed", 0) == report["images"]
    assert report["captioner"]["completion_tokens"] > 0
    metrics = json.loads(Paths(root).eval_metrics.read_text())
    # every annotated val pair (10 a category) is scored, or counted where it was dropped and why (an image the tiny
    # random MLLM could not caption leaves its pairs out)
    scored = sum(metrics[c]["queries"] + metrics[c]["dropped"] for c in ("dress", "shirt", "toptee"))
    assert scored > 0 and scored + sum(made["pairs_dropped"].get("val", {}).values()) == 30, (metrics, made)

    # Where and how fast the server runs is not tracked: changing it re-runs nothing, and starts no server.
    set_params(root, {"caption": {"max_concurrency": 2, "startup_timeout": 10, "batch_size": 7}})
    again = run(["dvc", "repro"], root, env=SERVER_ENV)
    assert ran(again.stdout) == set()
    # A tracked setting re-runs the stage; the cache answers every image already captioned, so only earlier
    # failures (if any) go to a server.
    set_params(root, {"caption": {"retries": 3, "startup_timeout": 300}})
    third = run(["dvc", "repro", "caption"], root, env=SERVER_ENV)
    assert ran(third.stdout) == {"caption"}
    rerun = json.loads((root / "data/captions/report.json").read_text())
    assert rerun["cached"] == report["captioned"]
    assert ("starting the vLLM server" in third.stdout) == (report.get("failed", 0) > 0)
