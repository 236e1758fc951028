"""dvc.yaml and pipeline/paths.py name the same files: every output a stage declares is a path the code writes."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import read_yaml
from pipeline.paths import Paths
from tests.conftest import REPO


def _known_paths() -> set[Path]:
    paths = Paths()
    return {getattr(paths, name) for name, value in vars(Paths).items() if isinstance(value, property)}


def _declared_outputs() -> list[str]:
    outputs = []
    for stage in read_yaml(REPO / "dvc.yaml")["stages"].values():
        for entry in stage.get("outs", []) + stage.get("metrics", []):
            outputs.append(entry if isinstance(entry, str) else next(iter(entry)))
    return outputs


def test_every_declared_output_is_under_a_path_the_code_writes():
    known = _known_paths()
    for output in _declared_outputs():
        assert any(Path(output) == path or path in Path(output).parents for path in known), output


def test_paths_follow_their_root(tmp_path: Path):
    assert Paths(tmp_path).captions == tmp_path / Paths().captions
    assert Paths(tmp_path).triplets("val") == tmp_path / "data/triplets/val.parquet"
