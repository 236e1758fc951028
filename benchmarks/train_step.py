"""Training-step throughput: the pipeline's loop (`pipeline.training.loop.train`) against the plain CLIP4Cir-style loop
(benchmarks/baseline.py: fp16 autocast + GradScaler on a GPU, AdamW not fused, a host sync every step), both with
inputs already on the device, as examples/s and as a fraction of the matmul ceiling measured in the same run.

    python benchmarks/train_step.py                       # CPU: the demo's tiny model, batch 64
    python benchmarks/train_step.py --batch-sizes 128 512 --compile --steps triplet stage1 stage2   # GPU: ViT-B/32

On a GPU the fast loop runs in bf16 (compute.precision: bf16) with fused AdamW; `--compile` adds a run with
torch.compile of both encoders (compute.compile), whose warm-up (compiling) is printed too. What a step is (triplet,
stage1, stage2): workload.step_problem. The plain loop's text tower reads the whole context, the fast loop's only
the batch's longest text, so each loop's FLOPs per example are counted on its own.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from baseline import batch_plan, plain_model, plain_train

from common import append_result, count_flops, describe, device_from_arg, markdown_table, matmul_ceiling, synchronize
from pipeline.config import TrainParams
from pipeline.runtime import Runtime
from pipeline.training.loop import train
from workload import STEPS, default_arch, model_for, step_problem


def _problem(kind: str, arch: str, batch: int, runtime: Runtime, steps: int = 1):
    """A model and a step over `steps * batch` examples (each timed run is one pass over them)."""
    model = model_for(arch, runtime.device)
    pool = steps * batch
    size = model.clip.visual.preprocess_cfg["size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    pixels = torch.randint(0, 256, (pool, 3, *size), dtype=torch.uint8, device=runtime.device)
    trained, loss = step_problem(kind, model, pixels, pool, runtime)
    return model, trained, loss


def run_fast(kind: str, arch: str, batch: int, steps: int, warmup: int, runtime: Runtime) -> tuple[float, float]:
    """Seconds per step of the pipeline's own loop, and the seconds of its first `warmup` steps (compilation
    included), which are not in the per-step time."""
    model, trained, loss = _problem(kind, arch, batch, runtime, max(steps, warmup))
    encoder = runtime.prepare(model)
    del encoder  # compiled in place; the loss closures call the model's encoders

    def steps_of(count: int) -> None:
        params = TrainParams(epochs=1, batch_size=batch, lr=1e-5, warmup_fraction=0.0)
        train([(trained, params.lr)], loss, count * batch, params, 0, None, [model], runtime)

    start = time.perf_counter()
    steps_of(warmup)
    synchronize(runtime.device)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    steps_of(steps)
    synchronize(runtime.device)
    return (time.perf_counter() - start) / steps, warm


def run_plain(kind: str, arch: str, batch: int, steps: int, warmup: int, device: torch.device) -> float:
    model, trained, loss = _problem(kind, arch, batch, Runtime(device), max(steps, warmup))
    plain_model(model)
    params = TrainParams(epochs=1, batch_size=batch, lr=1e-5, warmup_fraction=0.0)
    rng = np.random.default_rng(0)

    def steps_of(count: int) -> None:
        plan = batch_plan(count * batch, params, 0, count)
        plain_train(trained, lambda b: loss(b, rng, 0), plan, params, count, device)

    steps_of(warmup)
    synchronize(device)
    start = time.perf_counter()
    steps_of(steps)
    synchronize(device)
    return (time.perf_counter() - start) / steps


def flops_per_example(kind: str, arch: str, batch: int, device: torch.device, trim: bool) -> float:
    """Forward and backward FLOPs of one example of a step, the text tower trimmed (fast) or not (plain)."""
    model, _, loss = _problem(kind, arch, batch, Runtime(device))
    model.trim_text = trim
    return count_flops(lambda: loss(np.arange(batch), np.random.default_rng(0), 0).backward()) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device")
    parser.add_argument("--arch", help="open_clip architecture (default: ViT-B-32 on a GPU, fciq-tiny on a CPU)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=["triplet", "stage1", "stage2"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None, help="timed steps (default 30 on a GPU, 5 on a CPU)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time the fast loop with torch.compile")
    parser.add_argument("--compiled-only", action="store_true",
                        help="with --compile: time the compiled loop only (no plain, no eager run)")
    parser.add_argument("--jsonl", type=Path, help="append one JSON line per row to this file")
    args = parser.parse_args()
    device = device_from_arg(args.device)
    gpu = device.type == "cuda"
    arch = args.arch or default_arch(device)
    batch_sizes = args.batch_sizes or ([128, 512] if gpu else [64])
    iters = args.iters or (30 if gpu else 5)
    precision = "bf16" if gpu else "fp32"
    ceiling = matmul_ceiling(device, torch.bfloat16 if gpu else torch.float32)
    print(describe(device))
    print(f"{arch}; matmul ceiling {ceiling / 1e12:.1f} TFLOP/s ({'bf16' if gpu else 'fp32'}); {iters} timed steps")
    configs = [("plain", None), (f"fast {precision}", Runtime(device, precision))]
    if args.compile:
        compiled = (f"fast {precision} + compile", Runtime(device, precision, compile=True))
        configs = [compiled] if args.compiled_only else [*configs, compiled]
    rows = []
    for kind in args.steps:
        for batch in batch_sizes:
            plain_flops = flops_per_example(kind, arch, batch, device, trim=False)
            fast_flops = flops_per_example(kind, arch, batch, device, trim=True)
            plain_seconds = None
            for name, runtime in configs:
                if gpu:
                    torch.cuda.reset_peak_memory_stats(device)
                if runtime is None:
                    seconds, warm = run_plain(kind, arch, batch, iters, args.warmup, device), 0.0
                    plain_seconds = seconds
                else:
                    seconds, warm = run_fast(kind, arch, batch, iters, args.warmup, runtime)
                versus = plain_seconds / seconds if plain_seconds else None
                flops = plain_flops if runtime is None else fast_flops
                rate = batch / seconds
                memory = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}" if gpu else "-"
                rows.append([kind, batch, name, f"{rate:,.0f}", f"{1000 * seconds:.1f}", f"{flops / 1e9:.2f}",
                             f"{100 * rate * flops / ceiling:.0f}%", f"{versus:.2f}x" if versus else "-",
                             f"{warm:.1f}", memory])
                print(" | ".join(map(str, rows[-1])), flush=True)
                if args.jsonl:
                    append_result(args.jsonl, {"benchmark": "train_step", "device": describe(device), "arch": arch,
                                               "step": kind, "batch": batch, "loop": name, "per_s": rate,
                                               "vs_plain": versus, "warmup_s": warm,
                                               "gflop_per_example": flops / 1e9, "of_ceiling": rate * flops / ceiling})
    print()
    print(markdown_table(["step", "batch", "loop", "examples/s", "ms/step", "GFLOP/example", "of ceiling",
                          "vs plain", f"first {args.warmup} steps s", "peak GiB"], rows))


if __name__ == "__main__":
    main()
