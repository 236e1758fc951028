"""The whole DAG with LLaVA's vision tower as the image encoder (model.vision: a tiny random checkpoint in llava-hf's
published layout, inside the repository), then the search command, which loads the model without being told where
its tower is, and stops with one sentence when the tower's weights are no longer those it was trained with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from tests.support.dag import ALL_STAGES, TINY_PARAMS, ran, run, tiny_copy
from tests.support.tiny_mllms import TOWER_SHARD, build_tiny_mllm

FASHION_CIR = [sys.executable, "-m", "pipeline.cli"]


@pytest.mark.e2e
def test_the_dag_trains_and_serves_with_llavas_vision_tower(tmp_path: Path, warm_stages: dict[str, str]):
    root = tmp_path / "repo"
    tiny_copy(root, {**TINY_PARAMS, "model": {"vision": "datasets/llava"}})
    build_tiny_mllm("llava", root / "datasets" / "llava", image_size=32, patch_size=8, hidden=32, layers=3)
    result = run(["dvc", "repro"], root, env=warm_stages)
    assert ran(result.stdout) == ALL_STAGES
    metrics = json.loads((root / "metrics/eval.json").read_text())
    assert {"dress", "shirt", "toptee", "average"} <= set(metrics)
    assert json.loads((root / "data/image_store/store.json").read_text())["shape"][2:] == [32, 32]  # the tower's
    report = json.loads((root / "reports/stage1.json").read_text())
    assert report["image_encoder"].startswith("LLaVA vision tower of datasets/llava (layer -2, mean pooling, frozen")
    assert report["peak_memory_gib"] > 0 and report["seconds"] > 0
    saved = json.loads((root / "models/stage2/model.json").read_text())["vision"]
    assert saved["reference"] == "datasets/llava" and saved["weights_in_checkpoint"] is False

    def search(*args: str) -> subprocess.CompletedProcess:  # from elsewhere: the tower is found under --root
        return subprocess.run([*FASHION_CIR, "search", "--root", str(root), *args], cwd=tmp_path, capture_output=True,
                              text=True)

    reference = json.loads(run(["python", "-c", "import pandas; print(pandas.read_parquet('index/gallery.parquet')"
                                                "['name'].to_json())"], root).stdout)["0"]
    found = search("--image", reference, "--text", "is red", "--k", "3", "--json")
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)[0]["hits"]) == 3

    shard = root / "datasets" / "llava" / TOWER_SHARD  # the tower's weights change after training
    with safe_open(str(shard), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    name = next(n for n in tensors if n.endswith("layers.0.mlp.fc1.weight"))
    tensors[name] = tensors[name] * 2
    save_file(tensors, str(shard), metadata={"format": "pt"})
    refused = search("--image", reference, "--text", "is red")
    assert refused.returncode == 1
    assert refused.stderr.strip().startswith("error: the vision tower weights in model.vision = ")
    assert "are not those this model was trained with" in refused.stderr and "Traceback" not in refused.stderr
