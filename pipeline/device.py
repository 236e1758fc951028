"""The one rule for which device a stage computes on, in a module of its own so that a stage needing only the
choice (the `mine` stage) does not depend on the training runtime's code (pipeline/runtime.py)."""

from __future__ import annotations

import os

import torch

from pipeline.errors import PipelineError

DEVICE_VARIABLE = "FASHION_CIR_DEVICE"


def compute_device() -> torch.device:
    """The GPU when there is one, else the CPU; the FASHION_CIR_DEVICE environment variable (cpu, cuda, cuda:1,
    mps) overrides. Not a param: it changes speed, and results only by floating-point noise (the committed
    reference metrics are CPU runs, bit-for-bit reproducible)."""
    chosen = os.environ.get(DEVICE_VARIABLE) or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(chosen)
    except RuntimeError:
        raise PipelineError(f"{DEVICE_VARIABLE} = '{chosen}' is not a torch device; use cpu, cuda, cuda:<n> or mps.")
