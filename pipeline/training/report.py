"""What a training run cost: wall time and peak memory, written beside the model as the stage's report.

Reports are not DVC metrics: their numbers differ between any two runs, and metrics stay deterministic (the same
params give the same metrics on CPU). `experiments/backbones.py` reads them for its table; a person reads them to size
a GPU. Peak memory is CUDA memory allocated by torch on a GPU, and the process's peak resident set on the CPU.
"""

from __future__ import annotations

import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pipeline.io import write_json

if TYPE_CHECKING:
    from pipeline.models.retrieval import RetrievalModel
    from pipeline.runtime import Runtime


class Measurement:
    """Seconds and peak memory since it started, on one device."""

    def __init__(self, device: torch.device):
        self.device = device
        self.started = time.perf_counter()
        self.seconds = 0.0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def stop(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.started

    def summary(self) -> dict[str, object]:
        if self.device.type == "cuda":
            peak, kind = torch.cuda.max_memory_allocated(self.device), "CUDA memory allocated by torch"
            device = torch.cuda.get_device_name(self.device)
        else:
            scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
            peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "peak resident set of the process"
            device = f"CPU: {cpu_name()}, {torch.get_num_threads()} threads"
        return {"seconds": round(self.seconds, 1), "peak_memory_gib": round(peak / 2 ** 30, 3),
                "peak_memory": kind, "device": device,
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def cpu_name() -> str:
    """The CPU's model (`platform.processor()` is often only 'x86_64' on Linux, so /proc/cpuinfo is asked first)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextmanager
def measured(device: torch.device) -> Iterator[Measurement]:
    measurement = Measurement(device)
    try:
        yield measurement
    finally:
        measurement.stop()


def reported(stage: str, epochs: int, path: Path, runtime: Runtime, body: Callable[[], tuple[RetrievalModel, int]]
             ) -> None:
    """Run a training stage's `body` (which returns the model it trained and the examples of an epoch), measured;
    the main process writes the report to `path` and prints its line."""
    with measured(runtime.device) as cost:
        model, examples = body()
    if runtime.world.is_main:
        report = {"stage": stage, "epochs": epochs, "examples": examples, "image_encoder": model.image_encoder(),
                  **cost.summary()}
        write_json(path, report)
        print(f"{stage}: {report['seconds']} s, peak memory {report['peak_memory_gib']} GiB ({report['peak_memory']})")
