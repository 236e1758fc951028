"""What an installed wheel needs: every file of the package inside it (the presets' YAML among them), the presets'
command working from it with no checkout in reach, and every third-party module the code imports declared in
pyproject.toml (and every declared dependency used)."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from pipeline import presets
from tests.conftest import REPO

FIRST_PARTY = {"pipeline", "stages"}
OPTIONAL = {  # imported, deliberately not declared
    "vllm": "the vllm-offline caption backend; vLLM lives in its own environment (scripts/setup_vllm_cpu.sh) and is "
            "imported only inside that backend, which says how to install it when it is missing",
}
NOT_IMPORTED = {  # declared, needed, never imported by name
    "dvc": "the pipeline's runner: `dvc repro`, and `dvc plots` run as a command by pipeline/evaluation/plots.py",
    "milvus-lite": "the local Milvus that pymilvus starts for index.backend = milvus with a file uri",
    "python-multipart": "the form parser FastAPI needs for the search page's photo uploads",
}
BUILD = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml takes Python 3.11's tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {_normal(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)[0]) for spec in project["dependencies"]}


def _imports() -> dict[str, dict[str, bool]]:
    """Third-party top-level module -> {file: imported at module level (not inside a function)}."""
    found: dict[str, dict[str, bool]] = {}

    def visit(node: ast.AST, file: str, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                modules = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                modules = [child.module]
            else:
                modules = []
            for module in modules:
                top = module.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    files = found.setdefault(top, {})
                    files[file] = files.get(file, False) or not inner
            visit(child, file, inner)

    for top in sorted(FIRST_PARTY):
        for path in sorted((REPO / top).rglob("*.py")):
            visit(ast.parse(path.read_text()), path.relative_to(REPO).as_posix(), False)
    return found


def test_every_third_party_module_the_package_and_stages_import_is_declared():
    declared, distributions, imports = _declared(), packages_distributions(), _imports()
    undeclared = [f"{module} (from {', '.join(sorted(files))}; installed by {distributions.get(module, 'nothing')})"
                  for module, files in imports.items()
                  if module not in OPTIONAL and not declared & {_normal(d) for d in distributions.get(module, [])}]
    assert not undeclared, "imported but not in pyproject's dependencies: " + "; ".join(undeclared)
    for module in OPTIONAL:
        assert module in imports, f"{module} is no longer imported: drop it from OPTIONAL"
        eager = sorted(file for file, top_level in imports[module].items() if top_level)
        assert not eager, f"{module} is optional but {', '.join(eager)} import it at module level"


def test_every_declared_dependency_is_imported_or_says_why_not():
    distributions = packages_distributions()
    imported = {_normal(d) for module in _imports() for d in distributions.get(module, [])}
    unused = sorted(_declared() - imported - set(NOT_IMPORTED))
    assert not unused, f"declared in pyproject's dependencies but imported by no module: {', '.join(unused)}"
    stale = sorted(name for name in NOT_IMPORTED if name in imported or name not in _declared())
    assert not stale, f"NOT_IMPORTED names what is imported, or not declared: {', '.join(stale)}"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, the source copy it was built from): built with the build backend in a copy, so no build/ or
    egg-info lands in the checkout, and offline (no build isolation, no download)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "pipeline", source / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-c", BUILD, str(out)], cwd=source, capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    return out / build.stdout.strip().splitlines()[-1], source


def test_the_wheel_carries_every_file_of_the_package_and_every_preset(built):
    wheel, source = built
    names = set(zipfile.ZipFile(wheel).namelist())
    preset_files = {f"pipeline/presets/{name}.yaml" for name in presets.available()}
    assert len(preset_files) >= 7 and not preset_files - names, f"presets left out: {sorted(preset_files - names)}"
    files = {path.relative_to(source).as_posix() for path in (source / "pipeline").rglob("*") if path.is_file()}
    assert not files - names, f"files of pipeline/ the wheel leaves out: {sorted(files - names)}"


def test_the_presets_command_works_from_the_wheel_with_no_checkout_in_reach(built, tmp_path):
    wheel, _ = built
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"  # the working directory: a params.yaml and nothing else
    elsewhere.mkdir()
    shutil.copy(REPO / "params.yaml", elsewhere / "params.yaml")

    def run(code: list[str], path: Path) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(path)}  # ahead of the editable install's finder
        return subprocess.run([sys.executable, *code], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=120)

    where = run(["-c", "import pipeline.presets as p; print(p.__file__)"], site)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    listing = [f"{name}: {description}" for name, description in presets.available().items()]
    for path in (site, wheel):  # unpacked, and the wheel itself on sys.path (zipimport: importlib.resources only)
        listed = run(["-m", "pipeline.presets"], path)
        assert listed.returncode == 0 and listed.stdout.splitlines() == listing, listed.stderr
    applied = run(["-m", "pipeline.presets", "catalog"], site)
    assert applied.returncode == 0 and applied.stdout.endswith("keys set by preset 'catalog'; run `dvc repro` (or "
                                                               "`dvc exp run`).\n"), applied.stderr
    assert re.search(r"^  source: catalog +#", (elsewhere / "params.yaml").read_text(), re.MULTILINE)  # comment kept
    wrong = run(["-m", "pipeline.presets", "nope"], site)
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert wrong.stderr == f"error: no preset named 'nope'; the presets are: {', '.join(presets.available())}.\n"
