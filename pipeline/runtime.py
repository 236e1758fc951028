"""Where and how models run: the Runtime of the training, embedding and evaluation stages (device, precision,
torch.compile, and this process's place among torchrun's). The device rule itself is pipeline/device.py; starting
and joining torchrun processes is training's own (pipeline/training/distributed.py), so that no stage but the
training stages depends on that code.

`compute.compile` is a plain choice, off by default: compiling the encoders is a fixed cost that a long GPU run
repays and a short or CPU run does not (benchmarks/RESULTS.md measures both sides). On the CPU the committed
reference runs are eager."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from pipeline.config import ComputeParams
from pipeline.device import compute_device

if TYPE_CHECKING:
    from pipeline.models.retrieval import RetrievalModel

Precision = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class World:
    """This process's place among the torchrun processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """The rank that validates, logs and writes outputs."""
        return self.rank == 0


@dataclass(frozen=True)
class Runtime:
    """How a training, embedding or evaluation stage computes: on which device, in which precision, compiled or
    not, and as which of the torchrun processes (a World of one when not distributed)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: Precision = "fp32"
    compile: bool = False
    world: World = field(default_factory=World)
    fused: bool | None = None  # fused AdamW; None = on a GPU (on the CPU the plain update keeps the demo's numbers)

    @property
    def fused_optimizer(self) -> bool:
        return self.device.type == "cuda" if self.fused is None else self.fused

    @classmethod
    def start(cls, compute: ComputeParams, device: torch.device | None = None, world: World | None = None
              ) -> Runtime:
        """From the `compute` params, on `device` (default: pipeline.device's choice) as `world`'s process."""
        return cls(device or compute_device(), compute.precision, compute.compile, world or World())

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for the forward pass when precision is bf16 (weights and optimizer stay fp32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def prepare(self, model: RetrievalModel) -> nn.Module:
        """`model` on the device, its encoders compiled in place when compile is true, wrapped in
        DistributedDataParallel under torchrun. Call the result as `encoder(pixels=..., tokens=...)`."""
        model.to(self.device)
        if self.compile:
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
