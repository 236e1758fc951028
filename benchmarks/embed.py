"""Gallery embedding throughput: the `embed` stage's path (images from the decoded-image store, resident on a GPU,
bf16 there; `pipeline.features.encode.image_features`) against the plain path (a DataLoader decoding the JPEG files with
Pillow in worker processes, then encoding; fp16 autocast on a GPU), as images/s and as a fraction of the matmul
ceiling measured in the same run.

    python benchmarks/embed.py                                   # CPU: tiny model, 2,048 images
    python benchmarks/embed.py --images 40000 --batch-size 1024  # GPU: ViT-B/32 at 224 px

The JPEGs and stores are kept under --dir between runs (written once).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from baseline import ImageFiles
from torch.utils.data import DataLoader

from common import append_result, count_flops, describe, device_from_arg, markdown_table, matmul_ceiling, synchronize
from pipeline.data.store import StoredPixels
from pipeline.features.encode import image_features
from pipeline.runtime import Runtime
from workload import default_arch, model_for, store_for, write_images


def plain_embedding(model, paths: list[str], batch_size: int, workers: int, device: torch.device) -> None:
    amp = device.type == "cuda"
    loader = DataLoader(ImageFiles(paths, model), batch_size=batch_size, num_workers=workers, pin_memory=amp)
    with torch.no_grad():
        for pixels, _ in loader:
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                model.encode_images(pixels.to(device, non_blocking=True)).cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device")
    parser.add_argument("--arch", help="open_clip architecture (default: ViT-B-32 on a GPU, fciq-tiny on a CPU)")
    parser.add_argument("--images", type=int, default=None, help="default 40,000 on a GPU, 2,048 on a CPU")
    parser.add_argument("--image-size", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=None, help="default 1,024 on a GPU, 256 on a CPU")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/fashion-cir-bench"))
    parser.add_argument("--jsonl", type=Path, help="append one JSON line per path to this file")
    args = parser.parse_args()
    device = device_from_arg(args.device)
    gpu = device.type == "cuda"
    arch = args.arch or default_arch(device)
    n = args.images or (40_000 if gpu else 2_048)
    batch = args.batch_size or (1024 if gpu else 256)
    ceiling = matmul_ceiling(device, torch.bfloat16 if gpu else torch.float32)
    print(describe(device))
    print(f"{arch}; {n} JPEGs of {args.image_size} px; batch {batch}; {args.workers} workers; "
          f"matmul ceiling {ceiling / 1e12:.1f} TFLOP/s")

    paths = write_images(args.dir / f"jpeg-{args.image_size}", n, args.image_size)
    model = model_for(arch, device).eval()
    store, _ = store_for(model, paths, args.dir / f"store-{arch}-{args.image_size}-{n}", args.workers)
    size = store.shape
    flops = count_flops(lambda: model.encode_images(torch.zeros((8, *size), dtype=torch.uint8, device=device))) / 8

    def seconds(fn) -> float:
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - start

    def warm_up(runtime: Runtime) -> None:
        """Allocation, cuBLAS's choices (and compiling) on two full batches, so one timed pass measures the rate."""
        zeros = torch.zeros((2 * batch, *size), dtype=torch.uint8, device=device)
        image_features(model, zeros, batch, runtime)

    rows = []
    warm_up(Runtime(device, "fp32"))
    plain = seconds(lambda: plain_embedding(model, paths, batch, args.workers, device))
    rows.append(["plain: JPEGs decoded by a DataLoader" + (", fp16" if gpu else ""), plain])
    for precision in (["fp32", "bf16"] if gpu else ["fp32"]):
        runtime = Runtime(device, precision, compile=args.compile)
        runtime.prepare(model)
        warm_up(runtime)
        pixels = StoredPixels(store, store.rows(paths), device)  # resident on a GPU: copied once, not timed
        took = seconds(lambda: image_features(model, pixels, batch, runtime))
        rows.append([f"pipeline: from the image store, {precision}" + (" + compile" if args.compile else ""), took])
    table = [[name, f"{n / took:,.0f}", f"{100 * n * flops / took / ceiling:.0f}%", f"{plain / took:.2f}x"]
             for name, took in rows]
    if args.jsonl:
        for name, took in rows:
            append_result(args.jsonl, {"benchmark": "embed", "device": describe(device), "arch": arch, "images": n,
                                       "batch": batch, "path": name, "per_s": n / took, "vs_plain": plain / took})
    print()
    print(markdown_table(["path", "images/s", "of ceiling", "vs plain"], table))
    print(f"\n{flops / 1e9:.2f} GFLOP per image; the store holds {n * np.prod(size) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
