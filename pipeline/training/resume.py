"""Training that survives being killed: after every finished epoch the loop saves what continuing needs, and a
rerun of the same stage (same params, same inputs, same code) continues from there with the same result.

The state lives beside the stage's output (`models/.<stage>.resume/`), outside what DVC tracks, so DVC's clean-up of
the stage's outputs before a run does not remove it; it is removed when the stage finishes. It holds the trained
modules' weights, the optimizer and schedule, every random-number generator the loop draws from, anything else the
stage registers (stage 2's mined negatives), and the metrics logged so far, so that DVCLive's curves come out whole.
A state made by other params, inputs or code is never used: its key is a digest of all three.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from pipeline.io import atomic_path

STATE = "state.pt"


def _files(path: Path) -> list[Path]:
    """Every file of `path` (none if it does not exist: a stage with nothing to train reads no image store)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path] if path.exists() else []


PIPELINE = Path(__file__).resolve().parents[1]  # the code a run's key covers


def run_key(params: dict[str, Any], inputs: Iterable[Path], code: Iterable[Path] = (PIPELINE,)) -> str:
    """What a resumable run must share with the one that saved the state: its params, its input files (folders:
    every file in them) as they are on disk (size and modification time: the image store of a real dataset is
    gigabytes, too many to read at every start) and the source of its code (read whole)."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for file in (f for path in inputs for f in _files(Path(path))):
        stat = file.stat()
        digest.update(f"{file}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for file in (f for path in code for f in _files(Path(path)) if f.suffix == ".py"):
        digest.update(str(file).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


class EpochCheckpoint:
    """The resume state of one stage's run, keyed by `run_key`."""

    def __init__(self, directory: Path, key: str):
        self.directory, self.key = Path(directory), key

    def load(self) -> dict[str, Any] | None:
        """The saved state of this very run, or None (nothing saved, or saved by another run: discarded)."""
        path = self.directory / STATE
        if not path.is_file():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("key") != self.key:
            self.clear()
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write the state whole (temporary name, then rename) so a kill while saving keeps the previous one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.directory / STATE) as tmp:
            torch.save({**state, "key": self.key}, tmp)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
