"""Data parallelism for stage 1 and stage 2: torchrun processes, DistributedDataParallel, and features gathered
across ranks so that N processes compute the loss of the same global batch one process would.

Every rank draws the same global batch (same seed, same generator), encodes a contiguous slice of it, and
all-gathers the features with their gradient (open_clip's `gather_with_grad`, without `local_loss`), so the
contrastive loss on every rank is the global batch's loss. The all_gather backward sums the N ranks' identical
gradients of each slice and DDP's all-reduce averages the parameter gradients, which leaves exactly the
single-process gradient: results change by floating-point noise only (tests/test_distributed.py).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

from pipeline.config import ComputeParams
from pipeline.device import compute_device
from pipeline.errors import PipelineError
from pipeline.runtime import Runtime, World


def slice_size(world: World, batch_size: int) -> int:
    return math.ceil(batch_size / world.size)


def shard(world: World, batch: np.ndarray) -> np.ndarray:
    """This rank's contiguous slice of a global batch, padded (repeating the batch's last row) to the common size
    all_gather needs; `gather` drops the padding again."""
    size = slice_size(world, len(batch))
    part = batch[world.rank * size:(world.rank + 1) * size]
    return np.concatenate([part, np.repeat(batch[-1:], size - len(part))])


def gather(world: World, local: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The global batch's rows in order, from every rank's `shard`; gradients flow back to each rank's slice."""
    if world.size == 1:
        return local[:batch_size]
    with warnings.catch_warnings():  # deprecated for a private API in torch 2.14; open_clip still uses it
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(dist_fn.all_gather(local))[:batch_size]


def init_world(device: torch.device) -> World:
    """Join the torchrun process group if this process was started by torchrun (NCCL on GPUs, gloo on CPUs)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def process_device(device: torch.device) -> torch.device:
    """One GPU per torchrun process (LOCAL_RANK), as DDP expects; a CPU device is shared."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


def launch(processes: int, module: str) -> bool:
    """Run `python -m module` under torchrun with `processes` processes if asked and not already under torchrun.
    True when it did (the caller's own process has nothing left to do)."""
    if processes == 1 or "LOCAL_RANK" in os.environ:
        return False
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
               "--nproc-per-node", str(processes), "-m", module]
    print(f"{module}: running under torchrun with {processes} processes (compute.processes)", flush=True)
    status = subprocess.run(command).returncode
    if status != 0:
        raise PipelineError(f"{module} failed under torchrun with compute.processes = {processes} (exit status "
                            f"{status}); the processes' own messages are above.")
    return True


def close_world() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def run_distributed(compute: ComputeParams, module: str, body: Callable[[Runtime], None]) -> None:
    """Run a training stage's `body`: in this process, or under torchrun when compute.processes > 1 (this process
    then only waits for torchrun's, which come back here with the process group to join)."""
    device = compute_device()
    if device.type == "cuda" and compute.processes > torch.cuda.device_count():
        raise PipelineError(f"compute.processes = {compute.processes} asks for one process per GPU, but this machine "
                            f"has {torch.cuda.device_count()}; use at most that many.")
    if launch(compute.processes, module):
        return
    device = process_device(device)
    runtime = Runtime.start(compute, device, init_world(device))
    try:
        body(runtime)
    finally:
        close_world()
