"""Training that resumes: a run killed after some epochs continues from its last finished one and ends exactly where
an uninterrupted run ends (weights, optimizer, random streams, logged curves)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.config import TrainParams
from pipeline.paths import Paths
from pipeline.training.loop import open_live, train
from pipeline.training.resume import EpochCheckpoint, run_key
from tests.support.dag import TINY_PARAMS, run, tiny_copy

PARAMS = TrainParams(epochs=5, batch_size=4, lr=0.05)


class Killed(Exception):
    """Stands for the process dying in the middle of an epoch."""


def _fit(tmp_path: Path, checkpoint: EpochCheckpoint | None, die_in_epoch: int | None = None) -> tuple[dict, list]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.3), nn.Linear(8, 1))
    data = torch.randn(20, 6)

    def batch_loss(batch: np.ndarray, rng: np.random.Generator, epoch: int) -> torch.Tensor:
        if epoch == die_in_epoch:
            raise Killed
        noise = torch.from_numpy(rng.standard_normal(len(batch)).astype(np.float32))
        return ((model(data[batch]).squeeze(1) - noise) ** 2).mean()

    with open_live(tmp_path / "live") as live:
        train([(list(model.parameters()), PARAMS.lr)], batch_loss, len(data), PARAMS, 0, live, [model],
              checkpoint=checkpoint, stateful={"model": model})
    loss = (tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()[1:]
    return model.state_dict(), [row.split("\t")[-1] for row in loss]


def test_a_run_killed_mid_epoch_ends_exactly_where_an_uninterrupted_one_ends(tmp_path: Path):
    weights, curve = _fit(tmp_path / "straight", None)
    checkpoint = EpochCheckpoint(tmp_path / "resume", run_key({"run": 1}, []))
    with pytest.raises(Killed):
        _fit(tmp_path / "resumed", checkpoint, die_in_epoch=3)
    assert torch.load(tmp_path / "resume" / "state.pt", weights_only=True)["epoch"] == 3
    resumed, resumed_curve = _fit(tmp_path / "resumed", checkpoint)
    assert all(torch.equal(weights[k], resumed[k]) for k in weights)
    assert resumed_curve == curve and len(curve) == PARAMS.epochs  # DVCLive's curve whole, the first 3 re-logged


def test_a_state_saved_by_another_run_is_never_used(tmp_path: Path):
    mine = EpochCheckpoint(tmp_path / "resume", run_key({"lr": 0.05}, []))
    mine.save({"epoch": 2})
    assert mine.load()["epoch"] == 2
    other = EpochCheckpoint(tmp_path / "resume", run_key({"lr": 0.01}, []))
    assert other.load() is None and not (tmp_path / "resume").exists()


def test_the_key_follows_params_inputs_and_code(tmp_path: Path):
    data, code = tmp_path / "captions.parquet", tmp_path / "code"
    data.write_bytes(b"a")
    code.mkdir()
    (code / "loss.py").write_text("x = 1\n")
    key = run_key({"lr": 1}, [data], [code])
    assert run_key({"lr": 1}, [data], [code]) == key
    assert run_key({"lr": 2}, [data], [code]) != key
    data.write_bytes(b"bb")
    changed_data = run_key({"lr": 1}, [data], [code])
    assert changed_data != key
    (code / "loss.py").write_text("x = 2\n")
    assert run_key({"lr": 1}, [data], [code]) != changed_data


@pytest.mark.e2e
def test_stage1_killed_with_sigkill_resumes_to_the_same_model(tmp_path: Path, warm_stages: dict):
    """kill -9 of the stage-1 process (in its own interpreter) in the middle of its run, then `dvc repro`: the model
    it ends with is the model of a run that was never interrupted."""
    root = tiny_copy(tmp_path / "repo", {**TINY_PARAMS, "stage1": {"epochs": 12, "batch_size": 16}})
    run(["dvc", "repro", "stage1"], root, env=warm_stages)
    paths = Paths(root)
    reference = torch.load(paths.stage1_dir / "model.pt", weights_only=True)
    state = paths.resume_dir("stage1") / "state.pt"
    assert not state.exists()  # removed when the stage finished
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen([sys.executable, "-m", "stages.stage1"], cwd=root, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if state.is_file() and torch.load(state, weights_only=True)["epoch"] >= 3:
            break
        time.sleep(0.2)
    assert process.poll() is None, "stage 1 finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = torch.load(state, weights_only=True)["epoch"]
    assert 3 <= killed_at < 12
    again = run(["dvc", "repro", "stage1"], root, env=warm_stages)
    assert f"resuming after epoch {killed_at} of 12" in again.stderr + again.stdout
    resumed = torch.load(paths.stage1_dir / "model.pt", weights_only=True)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    assert not state.exists()
