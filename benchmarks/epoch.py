"""End-to-end training epoch on real image files: the pipeline's path (every image decoded once into the image
store, then `pipeline.training.loop.train` fed from it) against the plain loop, which decodes each batch's JPEGs
with Pillow in DataLoader worker processes at every step (benchmarks/baseline.py). The store in each of its formats
(`--stores`): raw pixels (resident on a GPU) and re-encoded JPEG (decoded by threads on a CPU, by nvJPEG on a GPU),
so the table says whether the smaller store starves training. Also prints the first-time decoding rate into each.

    python benchmarks/epoch.py                                              # CPU: tiny model, 1,024 images
    python benchmarks/epoch.py --images 20000 --batch-size 512 --step triplet   # GPU: ViT-B/32 at 224 px, bf16

The JPEGs and stores are kept under --dir between runs (written once).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from baseline import DecodedBatch, batch_plan, plain_model, plain_train

from common import append_result, describe, device_from_arg, markdown_table, synchronize
from pipeline.config import TrainParams
from pipeline.data.store import ImageStore, StoredPixels
from pipeline.runtime import Runtime
from pipeline.training.loop import train
from workload import default_arch, images_of, model_for, step_problem, store_for, write_images


def timed(fn, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device")
    parser.add_argument("--arch", help="open_clip architecture (default: ViT-B-32 on a GPU, fciq-tiny on a CPU)")
    parser.add_argument("--step", choices=["triplet", "stage1"], default="triplet")
    parser.add_argument("--images", type=int, default=None, help="default 20,000 on a GPU, 1,024 on a CPU")
    parser.add_argument("--image-size", type=int, default=300, help="side of the JPEG files (FashionIQ: ~300)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 512 on a GPU, 64 on a CPU")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/fashion-cir-bench"))
    parser.add_argument("--no-plain", action="store_true", help="time the pipeline's path only")
    parser.add_argument("--stores", nargs="+", choices=["raw", "jpeg"], default=["raw", "jpeg"])
    parser.add_argument("--jsonl", type=Path, help="append one JSON line per path to this file")
    args = parser.parse_args()
    device = device_from_arg(args.device)
    gpu = device.type == "cuda"
    arch = args.arch or default_arch(device)
    n = args.images or (20_000 if gpu else 1_024)
    batch = args.batch_size or (512 if gpu else 64)
    steps = n // batch
    params = TrainParams(epochs=1, batch_size=batch, lr=1e-5, warmup_fraction=0.0)
    print(describe(device))
    print(f"{arch}; {n} JPEGs of {args.image_size} px; {args.step} steps of {batch}; {args.workers} workers")

    paths = write_images(args.dir / f"jpeg-{args.image_size}", n, args.image_size)
    model = model_for(arch, device)
    runtime = Runtime(device, "bf16" if gpu else "fp32", compile=args.compile)
    runtime.prepare(model)
    unit = "triplets/s" if args.step == "triplet" else "pairs/s"
    rows, timings, warmups = [], [], {}
    for fmt in args.stores:
        store_dir = args.dir / f"store-{arch}-{args.image_size}-{n}-{fmt}"
        fresh = not (store_dir / "store.json").is_file()
        decode_seconds = timed(lambda: store_for(model, paths, store_dir, args.workers, fmt), device)
        store = ImageStore.open(store_dir)
        gib = sum(f.stat().st_size for f in store_dir.iterdir()) / 2**30
        if fresh:
            rows.append([f"decode into the {fmt} store (once)", f"{n / decode_seconds:,.0f} images/s", "-", "-"])
            if args.jsonl:
                append_result(args.jsonl, {"benchmark": "decode", "device": describe(device), "images": n,
                                           "store": fmt, "per_s": n / decode_seconds, "workers": args.workers})
        trained, loss = step_problem(args.step, model, StoredPixels(store, store.rows(paths), device), n, runtime)
        warm = timed(lambda: train([(trained, params.lr)], loss, 3 * batch, params, 0, None, [model], runtime),
                     device)
        print(f"{fmt}: first 3 steps (warm-up{', compiling' if args.compile else ''}): {warm:.1f} s", flush=True)
        fast = timed(lambda: train([(trained, params.lr)], loss, steps * batch, params, 0, None, [model], runtime),
                     device)
        name = f"pipeline: from the {fmt} store ({gib:.2f} GiB), {runtime.precision}" + (
            " + compile" if args.compile else "")
        timings.append((name, fast))
        warmups[name] = warm
    if not args.no_plain:
        model = plain_model(model_for(arch, device))
        decoded = DecodedBatch()
        trained, loss = step_problem(args.step, model, decoded, n, Runtime(device))
        rng = np.random.default_rng(0)
        plan = batch_plan(n, params, 0, steps)
        batches = decoded.plain_batches(paths, model, plan, images_of(args.step, n), device, args.workers)
        plain = timed(lambda: plain_train(trained, lambda b: loss(b, rng, 0), batches, params, steps, device),
                      device)
        timings.insert(0, ("plain: JPEGs decoded every step" + (", fp16 + GradScaler" if gpu else ""), plain))
    reference = timings[0][1] if not args.no_plain else None
    for path, seconds in timings:
        rate = steps * batch / seconds
        versus = f"{reference / seconds:.2f}x" if reference else "-"
        rows.append([path, f"{rate:,.0f} {unit}", f"{seconds:.1f}", versus])
        if args.jsonl:
            append_result(args.jsonl, {"benchmark": "epoch", "device": describe(device), "arch": arch,
                                       "step": args.step, "images": n, "batch": batch, "path": path, "per_s": rate,
                                       "vs_plain": reference / seconds if reference else None,
                                       "warmup_s": warmups.get(path)})
    print()
    print(markdown_table(["path", "throughput", "epoch s", "vs plain"], rows))


if __name__ == "__main__":
    main()
