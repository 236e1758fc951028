"""dvc.yaml's code deps: every pipeline module a stage can run is one of its deps, so that changing the code that
computes an output re-runs the stage (and nothing else does)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.config import read_yaml
from tests.conftest import REPO

# Modules that cannot change what a stage writes: file locations (DVC tracks the outputs themselves), error
# sentences, atomic writing, and params validation (DVC tracks the values in params.yaml, which names every key).
# What they import serves only them (config.py checks data.categories against attributes.CATEGORIES), so the walk
# does not follow their imports.
INERT = {"pipeline/__init__.py", "pipeline/paths.py", "pipeline/errors.py", "pipeline/io.py", "pipeline/config.py"}
STAGES = read_yaml(REPO / "dvc.yaml")["stages"]


def _module_file(module: str) -> Path | None:
    path = REPO.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _type_checking_blocks(tree: ast.Module) -> set[ast.AST]:
    """The nodes under `if TYPE_CHECKING:`: imports for annotations only, which never run."""
    skipped: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                skipped.update(ast.walk(child))
    return skipped


def _imported_modules(path: Path) -> set[str]:
    """Every pipeline module `path` imports, at module level or inside a function (a lazily imported backend runs
    too), with the packages that importing it executes; imports under `if TYPE_CHECKING:` never run."""
    names = set()
    tree = ast.parse(path.read_text())
    skipped = _type_checking_blocks(tree)
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from package import module`
    modules = set()
    for name in names:
        parts = name.split(".")
        if parts[0] == "pipeline":
            modules.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
    return modules


def _relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def code_run_by(script: Path) -> set[str]:
    """Repository-relative paths of the pipeline files `script` reaches through imports, inert ones excluded."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path not in seen and _relative(path) not in INERT:
            seen.add(path)
            todo.extend(f for f in map(_module_file, _imported_modules(path)) if f is not None)
    return {_relative(path) for path in seen if path != script}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_module_a_stage_runs_is_one_of_its_deps(stage: str):
    deps = [dep for dep in STAGES[stage]["deps"] if isinstance(dep, str)]
    code = code_run_by(REPO / "stages" / f"{stage}.py") | {f"stages/{stage}.py"}
    missing = sorted(path for path in code
                     if not any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps))
    assert not missing, f"dvc.yaml: stage '{stage}' runs {missing} but does not list them as deps"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_python_dep_of_a_stage_is_run_by_it(stage: str):
    code = code_run_by(REPO / "stages" / f"{stage}.py") | {f"stages/{stage}.py"}
    stale = [dep for dep in STAGES[stage]["deps"] if isinstance(dep, str) and dep.endswith(".py") and dep not in code]
    assert not stale, f"dvc.yaml: stage '{stage}' lists {stale} as deps but never runs them (a needless re-run)"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_code_folder_a_stage_lists_is_run_whole(stage: str):
    """A folder of code as a dep re-runs the stage on an edit to any file in it, so every file in it must run."""
    code = code_run_by(REPO / "stages" / f"{stage}.py")
    folders = [dep for dep in STAGES[stage]["deps"] if isinstance(dep, str) and dep.startswith(("pipeline/", "stages/"))
               and (REPO / dep).is_dir()]
    stale = sorted(_relative(path) for folder in folders for path in (REPO / folder).rglob("*.py")
                   if _relative(path) not in code)
    assert not stale, f"dvc.yaml: stage '{stage}' lists a folder whose {stale} it never runs (a needless re-run)"


@pytest.mark.parametrize("stage", sorted(set(STAGES) - {"stage1", "stage2"}))
def test_only_the_training_stages_depend_on_training_code(stage: str):
    """An edit to the DDP or loss code must not re-run captioning (hours of an MLLM on a GPU) or the index."""
    training = sorted(dep for dep in STAGES[stage]["deps"] if isinstance(dep, str)
                      and dep.startswith("pipeline/training"))
    assert not training, f"dvc.yaml: stage '{stage}' depends on training code {training}"


def test_nothing_outside_training_imports_it():
    """Layers: pipeline/training/ builds on the rest of pipeline/, never the other way round; only the two training
    stages' scripts enter it."""
    entries = {"stages/stage1.py", "stages/stage2.py"}
    scripts = [*REPO.joinpath("pipeline").rglob("*.py"), *REPO.joinpath("stages").glob("*.py")]
    offenders = sorted(_relative(path) for path in scripts
                       if not _relative(path).startswith("pipeline/training/") and _relative(path) not in entries
                       and any(name.startswith("pipeline.training") for name in _imported_modules(path)))
    assert not offenders, f"{offenders} import pipeline.training; move what they need out of training/"


def test_the_device_is_chosen_in_one_place():
    """pipeline/device.py owns the device rule; everything else asks it (or takes a device from its caller)."""
    offenders = sorted(_relative(path) for path in REPO.joinpath("pipeline").rglob("*.py")
                       if _relative(path) != "pipeline/device.py"
                       and ("DEVICE_VARIABLE" in path.read_text() or "FASHION_CIR_DEVICE" in path.read_text()
                            or '"cuda" if torch.cuda.is_available()' in path.read_text()))
    assert not offenders, f"{offenders} choose a device themselves; use pipeline.device.compute_device"


def test_the_walk_follows_lazy_imports_through_packages():
    code = code_run_by(REPO / "stages" / "caption.py")
    assert {"pipeline/captioning/__init__.py", "pipeline/captioning/hf.py", "pipeline/data/fashioniq.py"} <= code


def test_imports_for_annotations_only_are_not_deps(tmp_path: Path):
    module = tmp_path / "module.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipeline.models.retrieval import "
                      "RetrievalModel\nfrom pipeline.errors import PipelineError\n")
    assert _imported_modules(module) == {"pipeline", "pipeline.errors", "pipeline.errors.PipelineError"}
