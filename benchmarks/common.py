"""Shared helpers for the benchmark scripts: device choice, honest timing, FLOP counts and result output.

    python benchmarks/common.py     # the device line and the measured matmul ceiling (fp32; bf16 too on CUDA)

Scripts in benchmarks/ are run as `python benchmarks/<name>.py` from the repository root; Python puts the script's
own folder on sys.path, so they can `from common import ...`. The numbers they print are only comparable when
they come with the device line from `describe` and, for compute-bound work, as a fraction of the matmul ceiling
measured on the same machine in the same run (a datasheet peak is never reached, so it says little).
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.training.report import cpu_name


def device_from_arg(name: str | None) -> torch.device:
    """The device a `--device` argument names; with none, CUDA when there is one, so that the same command line
    works on a laptop and on a GPU box."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def describe(device: torch.device) -> str:
    """One line saying what the numbers were measured on and when: a timing without it cannot be compared."""
    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    if device.type == "cuda":
        return (f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
                f"{date}")
    return (f"CPU: {cpu_name()}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), "
            f"torch {torch.__version__}, {date}")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work: CUDA calls return before the work is done, so a timer read without this
    measures the launch, not the computation. A no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_call(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> float:
    """Seconds per call of `fn`: the median of `iters` timed calls after `warmup` untimed ones (first calls pay for
    allocation, autotuning and caches; the median ignores the odd slow call from the OS or another process)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(max(1, iters)):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_ceiling(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """Measured dense matmul FLOP/s (2 n^3 per n x n matmul) for `dtype` on `device`: the practical ceiling that
    other scripts report their FLOP/s as a fraction of. n is 8192 on CUDA (large enough to saturate the tensor
    cores) and 1024 on CPU (enough for BLAS to reach its peak within a second or so)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = time_per_call(lambda: a @ b, device, warmup=10, iters=10)   # CPU clocks need ~10 calls to settle
    return 2 * n**3 / seconds


def count_flops(fn: Callable[[], Any]) -> int:
    """Total FLOPs of one call of `fn`, as torch's FlopCounterMode counts them (matmuls, convolutions, attention;
    the backward pass too when `fn` runs one). Elementwise ops count as zero, which is what a fraction of the
    matmul ceiling should compare against."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table, so that output can be pasted into benchmarks/RESULTS.md as is. Floats are shown to
    4 significant figures; format them before passing them for anything else."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def append_result(path: str | Path, record: dict[str, Any]) -> None:
    """Append `record` as one JSON line to `path` (creating its folders): results from many runs and machines
    accumulate in one file that a script can read back, where printed tables would need parsing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="The device line and the measured matmul ceiling.")
    parser.add_argument("--jsonl", type=Path, help="append one JSON line per dtype to this file")
    args = parser.parse_args()
    dev = device_from_arg(None)
    print(describe(dev))
    dtypes = [torch.float32, torch.bfloat16] if dev.type == "cuda" else [torch.float32]
    for dt in dtypes:
        name, flops = str(dt).removeprefix("torch."), matmul_ceiling(dev, dt)
        print(f"matmul ceiling {name}: {flops / 1e12:.3f} TFLOP/s")
        if args.jsonl:
            append_result(args.jsonl, {"benchmark": "ceiling", "device": describe(dev), "dtype": name,
                                       "tflops": flops / 1e12})


if __name__ == "__main__":
    main()
