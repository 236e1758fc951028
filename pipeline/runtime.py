"""Where and how models run: one device choice for every stage and backend, and the Runtime of the training,
embedding and evaluation stages (precision, torch.compile, torchrun processes).

`compute.compile: auto` compiles on CUDA only, and only where compiling repays its cost: a training loop times a
few eager steps and compiles when the steps left would save more than compiling takes
(pipeline/training/loop.py). Embedding and evaluation never compile under auto: one pass over even FashionIQ's
gallery takes seconds on a GPU, far less than compiling. On the CPU auto never compiles: CPU runs keep the eager
arithmetic of the committed reference runs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from pipeline.config import ComputeParams
from pipeline.device import compute_device
from pipeline.errors import PipelineError
from pipeline.training.distributed import World, close_world, init_world, launch, process_device

if TYPE_CHECKING:
    from pipeline.models.retrieval import RetrievalModel

Precision = Literal["fp32", "bf16"]
Compile = bool | Literal["auto"]

# Measured on one NVIDIA H200 (torch 2.11, ViT-B/32, batch 512, bf16; benchmarks/train_step.py --compile, with the
# text trim): compiling both encoders took 63 s, and the compiled stage-1 step ran 1.46x the eager one (7,363 against
# 5,054 pairs/s; benchmarks/gpu-check-2026-11-30-h200.md).
COMPILE_SECONDS = 63.0
COMPILE_SPEEDUP = 1.46

@dataclass(frozen=True)
class Runtime:
    """How a training, embedding or evaluation stage computes: on which device, in which precision, compiled or
    not, and as which of the torchrun processes (a World of one when not distributed)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: Precision = "fp32"
    compile: Compile = False  # "auto": the training loop decides (compile_repays); prepare() never compiles for it
    world: World = field(default_factory=World)
    fused: bool | None = None  # fused AdamW; None = on a GPU (on the CPU the plain update keeps the demo's numbers)

    @property
    def fused_optimizer(self) -> bool:
        return self.device.type == "cuda" if self.fused is None else self.fused

    @classmethod
    def start(cls, compute: ComputeParams, distributed: bool = False) -> Runtime:
        """From the `compute` params; `distributed` stages join torchrun's process group when started by it."""
        device = compute_device()
        if distributed:
            device = process_device(device)
        compile = compute.compile if compute.compile != "auto" or device.type == "cuda" else False
        return cls(device, compute.precision, compile, init_world(device) if distributed else World())

    def compile_repays(self, steps_left: int, seconds_per_step: float) -> bool:
        """Under `auto`: whether `steps_left` eager steps of `seconds_per_step` would save more by compiling
        (COMPILE_SPEEDUP) than compiling costs (COMPILE_SECONDS). Never on a device other than CUDA."""
        saving = steps_left * seconds_per_step * (1 - 1 / COMPILE_SPEEDUP)
        return self.compile == "auto" and self.device.type == "cuda" and saving > COMPILE_SECONDS

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for the forward pass when precision is bf16 (weights and optimizer stay fp32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def prepare(self, model: RetrievalModel) -> nn.Module:
        """`model` on the device, its encoders compiled in place when compile is True (under auto the training
        loop may compile them later), wrapped in DistributedDataParallel under torchrun. Call the result as
        `encoder(pixels=..., tokens=...)`."""
        model.to(self.device)
        if self.compile is True:
            compile_encoders(model)
        if self.world.size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def compile_encoders(model: RetrievalModel) -> None:
    """torch.compile, in place (state-dict keys unchanged), of the image tower and of the text transformer: the
    text tower's embedding, pooling and projection stay eager, since RetrievalModel.encode_texts runs them itself
    to cut the text to the batch's length."""
    model.clip.visual.compile()
    model.text_tower.transformer.compile()


def run_distributed(compute: ComputeParams, module: str, body: Callable[[Runtime], None]) -> None:
    """Run a training stage's `body`: in this process, or under torchrun when compute.processes > 1 (this process
    then only waits for torchrun's, which come back here with the process group to join)."""
    device = compute_device()
    if device.type == "cuda" and compute.processes > torch.cuda.device_count():
        raise PipelineError(f"compute.processes = {compute.processes} asks for one process per GPU, but this machine "
                            f"has {torch.cuda.device_count()}; use at most that many.")
    if launch(compute.processes, module):
        return
    runtime = Runtime.start(compute, distributed=True)
    try:
        body(runtime)
    finally:
        close_world()
