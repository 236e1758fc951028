"""experiments/backbones.py, the backbone comparison's one command: what each run sets, and the table it prints from
the runs' metrics and reports (the runs themselves are whole DAGs: docs/results.md has the demo's)."""

from __future__ import annotations

import sys

import yaml

from pipeline.config import validate_params
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "experiments"))
from backbones import BACKBONES, _value, preset_settings, table  # noqa: E402


def test_every_backbone_run_sets_every_key_the_backbone_presets_set():
    keys = [set(preset_settings(name)) for name in BACKBONES]
    assert all(k == keys[0] for k in keys) and {"model.vision", "stage1.vision_lr"} <= keys[0]
    assert preset_settings("clip")["model.vision"] == ""
    assert preset_settings("llava")["model.vision"] == "llava-hf/llava-1.5-7b-hf"


def test_values_reach_dvc_as_the_params_they_were():
    """`dvc exp run -S key=value` reads the value back as YAML: an empty string, null and 1e-05 must survive."""
    for value in ("", None, 1e-05, 0.0, 0.001, True, -2, "llava-hf/llava-1.5-7b-hf"):
        assert yaml.safe_load(_value(value)) == value
    settings = {"model": {"vision": yaml.safe_load(_value("")), "vision_layer": yaml.safe_load(_value(None))},
                "stage1": {"vision_lr": yaml.safe_load(_value(1e-5))}}
    validate_params(settings, REPO / "params.yaml")  # strict types: a float stays a float


def _run(name: str, r10: float, seconds: tuple[float, float], memory: tuple[float, float]) -> dict:
    metrics = {c: {"R@10": r10, "R@50": r10 + 20, "queries": 300} for c in ("dress", "shirt", "toptee")}
    metrics["average"] = {"R@10": r10, "R@50": r10 + 20, "mean": r10 + 10}
    report = {"image_encoder": f"{name}'s", "device": "CPU"}
    return {"backbone": name, "metrics": metrics,
            "stage1": {**report, "seconds": seconds[0], "peak_memory_gib": memory[0]},
            "stage2": {**report, "seconds": seconds[1], "peak_memory_gib": memory[1]}}


def test_the_table_has_a_row_per_backbone_with_recall_time_and_memory():
    lines = table([_run("clip", 70.0, (80, 170), (1.5, 2.0)), _run("llava", 65.5, (90, 160), (2.5, 1.0))]).splitlines()
    assert lines[0].startswith("| backbone | image encoder | dress R@10 | dress R@50 | shirt R@10")
    assert "average R@10 | average R@50 | average mean | train time (s) | peak memory (GiB)" in lines[0]
    assert lines[2].startswith("| clip | clip's | 70.00 | 90.00 |") and "| 250 | 2.00 |" in lines[2]
    assert lines[3].startswith("| llava | llava's | 65.50 | 85.50 |") and "| 75.50 | 250 | 2.50 |" in lines[3]
