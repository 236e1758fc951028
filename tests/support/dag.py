"""Running the real DVC DAG in a temporary copy of the repository, for the end-to-end tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

from tests.conftest import REPO

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com", "GIT_COMMITTER_NAME": "test",
                "GIT_COMMITTER_EMAIL": "test@example.com"}
TINY_PARAMS = {
    "synthetic": {"families_train": 8, "families_val": 5, "family_size": 3, "distractors_val": 6, "image_size": 64},
    "triplets": {"generated_per_category": 12},
    "negatives": {"k": 4},
    "stage1": {"epochs": 2, "batch_size": 16},
    "stage2": {"epochs": 2, "batch_size": 16, "static_negatives": 16},
    "eval": {"batch_size": 64},
}


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {}), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", **GIT_IDENTITY}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def restore_reference_run(root: Path) -> None:
    """Put `root`'s workspace back to its last commit, outputs included, whatever experiments ran in it since."""
    run(["git", "reset", "-q", "--hard"], root)
    run(["dvc", "checkout", "--force"], root)


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def set_params(root: Path, updates: dict) -> None:
    yaml = YAML()
    params = yaml.load((root / "params.yaml").read_text())
    for section, values in updates.items():
        if isinstance(values, dict):
            for key, value in values.items():
                params[section][key] = value
        else:
            params[section] = values
    with open(root / "params.yaml", "w") as handle:
        yaml.dump(params, handle)


def tiny_copy(root: Path, params: dict) -> Path:
    """A git repository at `root` holding the committed tree (no run outputs) with `params` applied."""
    tracked = run(["git", "ls-files"], REPO).stdout.split()
    for name in tracked:
        source = REPO / name
        run_output = name.startswith(("metrics/", "plots/", "dvclive/", "reports/")) or name == "dvc.lock"
        if source.is_file() and not run_output:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    set_params(root, params)
    run(["git", "init", "-q"], root)
    run(["git", "config", "user.email", "test@example.com"], root)  # dvc exp commits need an identity
    run(["git", "config", "user.name", "test"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "tiny"], root)
    return root


ALL_STAGES = {"synthesize", "validate", "caption", "triplets", "decode", "stage1", "embed", "mine", "stage2",
              "evaluate", "index"}
