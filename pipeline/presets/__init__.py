"""Named params presets: `pipeline/presets/<name>.yaml` holds the keys a setting changes (the paper's FashionIQ run,
CIRR), merged into params.yaml with its comments kept, so `git diff params.yaml` shows exactly what the preset set.

    python -m pipeline.presets                   # list the presets and what each is for
    python -m pipeline.presets paper-fashioniq   # merge one into params.yaml, print the keys it changed

A preset is validated like params.yaml itself (unknown key, wrong type, impossible value: one sentence) before
params.yaml is touched, and params.yaml is replaced whole or not at all. The YAML files are package data, read with
importlib.resources, so an installed wheel has them as well as a checkout.
"""

from __future__ import annotations

import io
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML

from pipeline.config import read_yaml, validate_params
from pipeline.errors import PipelineError
from pipeline.io import atomic_path

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PRESETS_DIR: Traversable = files(__name__)  # this package's folder, in a checkout, a site-packages or a zip
SUFFIX = ".yaml"


def available() -> dict[str, str]:
    """Preset name -> its first comment line."""
    presets = {}
    for entry in sorted(PRESETS_DIR.iterdir(), key=lambda entry: entry.name):
        if entry.name.endswith(SUFFIX) and entry.is_file():
            lines = entry.read_text().splitlines()
            first = next((line for line in lines if line.startswith("#")), "# (no description)")
            presets[entry.name.removesuffix(SUFFIX)] = first.lstrip("# ").strip()
    return presets


def load(name: str) -> dict[str, Any]:
    """Preset `name`'s keys as nested sections, validated like params.yaml."""
    names = available()
    if name not in names:
        raise PipelineError(f"no preset named '{name}'; the presets are: {', '.join(names) or 'none'}.")
    path = PRESETS_DIR / f"{name}{SUFFIX}"
    preset = read_yaml(path) or {}
    validate_params(preset, path)
    return preset


def _merge(target: Any, overrides: dict[str, Any], prefix: str, changes: list[tuple[str, Any, Any]]) -> None:
    for key, value in overrides.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _merge(target[key], value, f"{name}.", changes)
        elif key not in target or target[key] != value:
            changes.append((name, target.get(key), value))
            target[key] = value


def apply_preset(name: str, params_path: str | Path = "params.yaml") -> list[tuple[str, Any, Any]]:
    """Merge preset `name` into `params_path`; returns (key, old, new) for every key it changed."""
    preset = load(name)
    params_path = Path(params_path)
    yaml = YAML()  # round-trip: keeps params.yaml's comments, layout and quoting
    yaml.preserve_quotes = True
    params = yaml.load(params_path.read_text())
    changes: list[tuple[str, Any, Any]] = []
    _merge(params, preset, "", changes)
    text = io.StringIO()
    yaml.dump(params, text)
    with atomic_path(params_path) as tmp:
        tmp.write_text(text.getvalue())
    return changes


def main(argv: list[str]) -> None:
    if not argv:
        for name, description in available().items():
            print(f"{name}: {description}")
        return
    changes = apply_preset(argv[0])
    for key, old, new in changes:
        print(f"{key}: {old} -> {new}")
    print(f"params.yaml: {len(changes)} keys set by preset '{argv[0]}'; run `dvc repro` (or `dvc exp run`).")
