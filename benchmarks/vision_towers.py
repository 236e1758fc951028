"""MLLM vision towers as the image encoder (model.vision), at their real architecture sizes with random weights:
stage 1 steps (the tower frozen, and fine-tuned) and gallery embedding through the pipeline's own code, as images/s,
peak memory and a fraction of the matmul ceiling measured in the same run.

    python benchmarks/vision_towers.py                 # CPU: every tower shrunk (--tiny), the demo's text tower
    python benchmarks/vision_towers.py --jsonl r.jsonl # GPU: the real sizes, ViT-B/32's text tower, bf16

    llava     LLaVA-1.5's OpenAI CLIP ViT-L/14 at 336 px, read at its second-to-last layer (the last is not built)
    internvl  InternVL2.5/3's InternViT-300M-448px (the 1B-14B models), its last layer
    minigpt4  MiniGPT-4's (BLIP-2's) EVA ViT-g/14 at 224 px, the 39 layers BLIP-2 keeps
    --include-6b adds InternVL2.5/3's InternViT-6B-448px-V2_5 (the 26B-78B models): 5.5B parameters

Each tower is built as model.vision builds it (pipeline/models/vision_tower.py: the transformers class of its config,
cut at the layer the MLLM reads, mean-pooled, a new projection) but with random weights, since weights do not change
the speed; it replaces the image tower of `--arch`'s CLIP, as create_model does. Stage 1 runs the pipeline's loop
(pipeline.training.loop.train) with stage 1's parameter groups and loss, once with `stage1.vision_lr: 0` (the
tower frozen: only the projection and the text tower train) and once with 1e-5 (fine-tuned); embedding runs
pipeline.features.encode.image_features. Inputs are uint8 pixels already on the device. A workload that runs out of
GPU memory is measured again at half the batch, and the row says which batches did not fit. FLOPs are
FlopCounterMode's: on a CPU they leave out attention (its CPU kernel has no FLOP formula), on CUDA they count it.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import open_clip
import torch
import transformers

from common import append_result, count_flops, describe, device_from_arg, markdown_table, matmul_ceiling, synchronize
from pipeline.config import ModelParams, Stage1Params
from pipeline.features.encode import image_features
from pipeline.models.clip import create_clip
from pipeline.models.mllm_checkpoint import FAMILIES, Family
from pipeline.models.retrieval import RetrievalModel
from pipeline.models.vision_tower import MLLMVisionTower, drop_unused_head, tower_class
from pipeline.runtime import Runtime
from pipeline.training.loop import train
from pipeline.training.stage1 import caption_alignment_loss, parameter_groups
from workload import default_arch, tokens_for

OPENAI_MEAN, OPENAI_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
        "image_size": 32, "patch_size": 8}  # --tiny: every tower this small (its kind of norm and attention kept)
VISION_LR = {"frozen": 0.0, "fine-tuned": 1e-5}  # stage1.vision_lr of the two stage 1 workloads


@dataclass(frozen=True)
class Tower:
    """One MLLM's vision tower: its transformers config, the MLLM family (whose name and the layer its language side
    reads come from pipeline/models/mllm_checkpoint.py), and its image processor's preprocessing."""

    key: str
    title: str
    config_class: str  # a transformers class name
    config: dict
    model_type: str  # the MLLM's, which picks its Family
    preprocess: dict  # open_clip's preprocess_cfg form, less the size (image_preprocessing of its processor)

    @property
    def family(self) -> Family:
        return next(family for family in FAMILIES if self.model_type in family.model_types)


CLIP_PROCESSOR = {"mode": "RGB", "mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "fill_color": 0,
                  "resize_mode": "shortest"}  # llava-hf's CLIPImageProcessor: shortest side, centre crop
SQUASH = {"mode": "RGB", "interpolation": "bicubic", "fill_color": 0, "resize_mode": "squash"}  # to size x size
INTERNVIT = {"image_size": [448, 448], "patch_size": [14, 14], "hidden_act": "gelu", "layer_norm_eps": 1e-6,
             "layer_scale_init_value": 0.1, "use_mean_pooling": True}
TOWERS = {tower.key: tower for tower in (
    Tower("llava", "LLaVA-1.5: CLIP ViT-L/14-336", "CLIPVisionConfig",
          {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
           "image_size": 336, "patch_size": 14, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
          "llava", CLIP_PROCESSOR),
    Tower("internvl", "InternVL: InternViT-300M-448px", "InternVLVisionConfig",
          {**INTERNVIT, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
           "num_attention_heads": 16, "attention_bias": True, "use_qk_norm": False, "norm_type": "layer_norm"},
          "internvl", {**SQUASH, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}),
    Tower("minigpt4", "MiniGPT-4 / BLIP-2: EVA ViT-g/14", "Blip2VisionConfig",
          {"hidden_size": 1408, "intermediate_size": 6144, "num_hidden_layers": 39, "num_attention_heads": 16,
           "image_size": 224, "patch_size": 14, "qkv_bias": True, "hidden_act": "gelu", "layer_norm_eps": 1e-6},
          "blip-2", {**SQUASH, "mean": OPENAI_MEAN, "std": OPENAI_STD}),
    Tower("internvl-6b", "InternVL: InternViT-6B-448px-V2_5", "InternVLVisionConfig",
          {**INTERNVIT, "hidden_size": 3200, "intermediate_size": 12800, "num_hidden_layers": 45,
           "num_attention_heads": 25, "attention_bias": False, "use_qk_norm": True, "norm_type": "rms_norm"},
          "internvl", {**SQUASH, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}),
)}


def tower_config(tower: Tower, tiny: bool) -> tuple[transformers.PretrainedConfig, int, int]:
    """The tower's config cut at the layer its MLLM reads (as load_tower cuts it), its input side, and its depth
    before the cut."""
    config = getattr(transformers, tower.config_class)(**{**tower.config, **(TINY if tiny else {})})
    depth = int(config.num_hidden_layers)
    config.num_hidden_layers = depth + 1 + tower.family.default_layer
    side = config.image_size
    return config, int(side if isinstance(side, int) else side[0]), depth


def build_model(tower: Tower, arch: str, device: torch.device, tiny: bool) -> tuple[RetrievalModel, int, int]:
    """`arch`'s CLIP with `tower` (random weights, initialised on `device`) as its image tower, as create_model puts
    a loaded one there; the input side and the depth before the cut."""
    config, side, depth = tower_config(tower, tiny)
    clip = create_clip(ModelParams(arch=arch), seed=0)
    with device:
        module = tower_class(config)(config)
    description = {"reference": f"random weights ({tower.title})", "family": tower.family.name,
                   "config": config.to_dict(), "layer": tower.family.default_layer, "pooling": "mean",
                   "preprocess": {**tower.preprocess, "size": side}}  # no digest: random weights are never saved
    embed_dim = int(open_clip.get_model_config(arch)["embed_dim"])
    clip.visual = MLLMVisionTower(drop_unused_head(module), description, embed_dim)
    return RetrievalModel(clip, arch).to(device), side, depth


def random_pixels(n: int, side: int, device: torch.device) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, device=device)


def free_memory(device: torch.device) -> None:
    """Give back what the last workload left (after an out-of-memory error: its tensors, now unreferenced)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """Peak GPU memory allocated since reset_peak; None on a CPU (not measured there)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


Measured = TypeVar("Measured")


def fitting_batch(measure: Callable[[int], Measured], batch: int, device: torch.device
                  ) -> tuple[int, Measured, list[int]]:
    """`measure(batch)`, halved while the GPU runs out of memory (a tower too large for the batch asked is measured
    at the largest that fits); the batch measured, its result, and the batches that did not fit."""
    failed = []
    while True:
        try:
            return batch, measure(batch), failed
        except torch.cuda.OutOfMemoryError:
            if batch <= 2:
                raise
            failed.append(batch)
        free_memory(device)
        batch //= 2


def stage1(model: RetrievalModel, side: int, vision_lr: float, batch: int, iters: int, warmup: int,
           runtime: Runtime, desc: str) -> tuple[float, float | None, float]:
    """Seconds per stage 1 step of the pipeline's loop (after `warmup` untimed steps), peak memory of the timed
    steps, and the FLOPs per image of one step (forward and backward of whatever trains)."""
    device = runtime.device
    pool = max(iters, warmup) * batch
    pixels = random_pixels(pool, side, device)
    tokens, caption_id = tokens_for(model, "stage1", pool, device)
    settings = Stage1Params(epochs=1, batch_size=batch, vision_lr=vision_lr, warmup_fraction=0.0)
    groups = parameter_groups(model, settings)
    loss = caption_alignment_loss(model, pixels, tokens, caption_id, runtime, settings.temperature)

    def steps(count: int) -> None:
        train(groups, loss, count * batch, settings, 0, None, [model], runtime, desc=desc)

    try:
        steps(warmup)
        synchronize(device)
        reset_peak(device)
        start = time.perf_counter()
        steps(iters)
        synchronize(device)
        seconds, peak = (time.perf_counter() - start) / iters, peak_gib(device)
        with runtime.autocast():
            flops = count_flops(lambda: loss(np.arange(batch), np.random.default_rng(0), 0).backward())
    finally:  # no gradient left to the next workload's memory, also after running out of memory
        model.zero_grad(set_to_none=True)
    return seconds, peak, flops / batch


def embedding(model: RetrievalModel, side: int, images: int, batch: int, runtime: Runtime, desc: str
              ) -> tuple[float, float | None]:
    """Seconds of one pass of the embed stage's loop over `images` images (after one untimed batch), and its peak
    memory."""
    device = runtime.device
    pixels = random_pixels(images, side, device)
    image_features(model, pixels[:batch], batch, runtime, desc)
    synchronize(device)
    reset_peak(device)
    start = time.perf_counter()
    image_features(model, pixels, batch, runtime, desc)
    synchronize(device)
    return time.perf_counter() - start, peak_gib(device)


def forward_flops(model: RetrievalModel, side: int, runtime: Runtime) -> float:
    """FLOPs of encoding one image (the tower, its pooling and projection)."""
    pixels = random_pixels(1, side, runtime.device)
    with torch.no_grad(), runtime.autocast():
        return count_flops(lambda: model.encode_images(pixels))


def measure_tower(tower: Tower, args: argparse.Namespace, runtime: Runtime, ceiling: float) -> list[dict]:
    """Every workload of one tower, as one record each."""
    device = runtime.device
    started = time.perf_counter()
    model, side, depth = build_model(tower, args.arch, device, args.tiny)
    synchronize(device)
    built = time.perf_counter() - started
    visual = model.clip.visual
    shared = {"benchmark": "vision_towers", "device": describe(device), "arch": args.arch, "tower": tower.key,
              "title": tower.title, "tiny": args.tiny, "image_size": side,
              "layers": visual.tower.config.num_hidden_layers, "depth": depth,
              "params": sum(p.numel() for p in visual.tower.parameters()),
              "gflop_forward": forward_flops(model, side, runtime) / 1e9, "precision": runtime.precision,
              "build_s": built}
    records = []
    for name, vision_lr in VISION_LR.items():
        batch, (seconds, peak, flops), failed = fitting_batch(
            lambda b: stage1(model, side, vision_lr, b, args.iters, args.warmup, runtime, f"{tower.key} {name}"),
            args.batch_size, device)
        records.append({**shared, "workload": f"stage 1, tower {name}", "batch": batch, "out_of_memory_at": failed,
                        "per_s": batch / seconds, "gflop_per_image": flops / 1e9, "peak_gib": peak})
        free_memory(device)
    batch, (seconds, peak), failed = fitting_batch(
        lambda b: embedding(model, side, args.images, b, runtime, f"{tower.key} embed"), args.embed_batch_size,
        device)
    records.append({**shared, "workload": "embedding", "batch": batch, "out_of_memory_at": failed,
                    "per_s": args.images / seconds, "gflop_per_image": shared["gflop_forward"], "peak_gib": peak})
    for record in records:
        record["of_ceiling"] = record["per_s"] * record["gflop_per_image"] * 1e9 / ceiling
    return records


def row(record: dict) -> list:
    failed = ", ".join(map(str, record["out_of_memory_at"]))
    batch = f"{record['batch']} ({failed}: out of memory)" if failed else str(record["batch"])
    peak = "-" if record["peak_gib"] is None else f"{record['peak_gib']:.1f}"
    return [record["tower"], str(record["image_size"]), f"{record['layers']} of {record['depth']}",
            record["params"] / 1e6, record["gflop_forward"], record["workload"], batch, f"{record['per_s']:,.1f}",
            record["gflop_per_image"], f"{100 * record['of_ceiling']:.0f}%", peak]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device")
    parser.add_argument("--arch", help="open_clip architecture of the text tower (default: ViT-B-32 on a GPU, "
                                       "fciq-tiny on a CPU)")
    parser.add_argument("--towers", nargs="+", choices=["llava", "internvl", "minigpt4"],
                        default=["llava", "internvl", "minigpt4"])
    parser.add_argument("--include-6b", action="store_true", help="also InternViT-6B-448px-V2_5 (5.5B parameters)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_true", default=None,
                      help="every tower 3 layers of width 32 at 32 px (the default on a CPU)")
    size.add_argument("--real", dest="tiny", action="store_false", default=None,
                      help="the real sizes (the default on a GPU)")
    parser.add_argument("--batch-size", type=int, help="stage 1 batch (default 128 on a GPU, 8 on a CPU)")
    parser.add_argument("--embed-batch-size", type=int, help="embedding batch (default 512 on a GPU, 16 on a CPU)")
    parser.add_argument("--images", type=int, help="images embedded (default 2,048 on a GPU, 64 on a CPU)")
    parser.add_argument("--iters", type=int, help="timed stage 1 steps (default 10 on a GPU, 2 on a CPU)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed stage 1 steps before them")
    parser.add_argument("--jsonl", type=Path, help="append one JSON line per measurement to this file")
    args = parser.parse_args()
    device = device_from_arg(args.device)
    gpu = device.type == "cuda"
    args.arch = args.arch or default_arch(device)
    args.tiny = not gpu if args.tiny is None else args.tiny
    args.batch_size = args.batch_size or (128 if gpu else 8)
    args.embed_batch_size = args.embed_batch_size or (512 if gpu else 16)
    args.images = args.images or (2048 if gpu else 64)
    args.iters = args.iters or (10 if gpu else 2)
    runtime = Runtime(device, "bf16" if gpu else "fp32")
    ceiling = matmul_ceiling(device, torch.bfloat16 if gpu else torch.float32)
    towers = [TOWERS[key] for key in args.towers] + ([TOWERS["internvl-6b"]] if args.include_6b else [])
    print(describe(device))
    print(f"text tower {args.arch}; {runtime.precision}; matmul ceiling {ceiling / 1e12:.3g} TFLOP/s; stage 1: batch "
          f"{args.batch_size}, {args.iters} timed steps after {args.warmup}; embedding: {args.images} images at batch "
          f"{args.embed_batch_size}; peak memory: " + ("GPU memory allocated" if gpu else "not measured on a CPU"))
    print(("towers shrunk (--tiny), random weights: " if args.tiny else "real sizes, random weights: ")
          + "; ".join(f"{t.key} = {t.title} (layer {t.family.default_layer})" for t in towers), flush=True)
    records = []
    for tower in towers:
        for record in measure_tower(tower, args, runtime, ceiling):
            records.append(record)
            print(" | ".join(map(str, row(record))) + f" | built in {record['build_s']:.1f} s", flush=True)
            if args.jsonl:
                append_result(args.jsonl, record)
        free_memory(device)
    print()
    print(markdown_table(["tower", "px", "layers", "params M", "GFLOP/image fwd", "workload", "batch", "images/s",
                          "GFLOP/image", "of ceiling", "peak GiB"], [row(record) for record in records]))


if __name__ == "__main__":
    main()
