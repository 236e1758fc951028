"""The plain training loop the fast path is measured against, and checked equal to (tests/test_fast_path.py).

CLIP4Cir-style: a DataLoader decodes every batch's image files with Pillow at every step, fp16 autocast with a
GradScaler on a GPU (fp32 on a CPU), AdamW without fusion, a host sync at every step (`loss.item()`), and the text
tower over the whole context, as open_clip's encode_text runs it (`plain_model`). It trains
what stage 1 trains (image-caption alignment) on the same batches with the same schedule and loss as
`pipeline.training.loop.train`, so on the same data its loss curve is the pipeline's, up to floating-point noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.config import TrainParams
from pipeline.data.store import decode_file
from pipeline.models.preprocessing import image_loader, preprocessing
from pipeline.models.retrieval import RetrievalModel
from pipeline.training.loop import epoch_batches, make_optimizer, steps_per_epoch, warmup_cosine
from pipeline.training.losses import clip_loss


class ImageFiles(Dataset):
    """(uint8 image, position) per file, decoded when asked."""

    def __init__(self, paths: list[str], model: RetrievalModel):
        self.paths, self.loader = paths, image_loader(preprocessing(model))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        pixels = decode_file(self.paths[i], self.loader)
        if pixels is None:
            raise ValueError(f"{self.paths[i]} cannot be decoded")
        return pixels, i


def plain_model(model: RetrievalModel) -> RetrievalModel:
    """`model` encoding texts as the plain loop does: over the whole context, not trimmed to the batch's longest."""
    model.trim_text = False
    return model


def batch_plan(n: int, params: TrainParams, seed: int, steps: int) -> list[np.ndarray]:
    """The first `steps` batches `pipeline.training.loop.train` draws for `n` examples (the same generator calls)."""
    rng = np.random.default_rng(seed)
    plan: list[np.ndarray] = []
    while len(plan) < steps:
        plan += list(epoch_batches(n, params.batch_size, rng))
    return plan[:steps]


def plain_train(trained: list[torch.nn.Parameter], loss_of: Callable[[Any], torch.Tensor], batches: Iterable,
                params: TrainParams, total_steps: int, device: torch.device) -> list[float]:
    """CLIP4Cir's update for each batch: fp16 autocast + GradScaler on a GPU, AdamW (not fused), gradient clipping,
    warm-up + cosine schedule, and `loss.item()` (a host sync) every step. The loss of each step."""
    optimizer = make_optimizer([(trained, params.lr)], params, fused=False)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, params.warmup_fraction))
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    losses = []
    for batch in batches:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = loss_of(batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        losses.append(loss.item())
    return losses


def plain_stage1(model: RetrievalModel, paths: list[str], tokens: torch.Tensor, caption_id: torch.Tensor,
                 params: TrainParams, seed: int, steps: int, device: torch.device, workers: int = 0) -> list[float]:
    """Stage 1 trained the plain way for `steps` steps, images decoded from `paths` by a DataLoader at every
    step; the loss of each step."""
    torch.manual_seed(seed)
    plain_model(model).to(device).train()
    trained = [p for name, p in model.named_parameters() if not name.startswith("clip.logit_")]
    batches = DataLoader(ImageFiles(paths, model), batch_sampler=batch_plan(len(paths), params, seed, steps),
                         num_workers=workers, pin_memory=device.type == "cuda")

    def loss_of(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        pixels, index = batch
        ids = caption_id[index].to(device)
        return clip_loss(model.encode_images(pixels.to(device, non_blocking=True)),
                         model.encode_texts(tokens[index]), params.temperature,
                         same_text=ids[:, None] == ids[None, :])

    total = params.epochs * steps_per_epoch(len(paths), params.batch_size)
    return plain_train(trained, loss_of, batches, params, total, device)


class DecodedBatch:
    """The plain loop's images: what a DataLoader decoded for the current step, handed to the step's loss when it
    asks for exactly those rows (so the plain and the fast loop share one loss function)."""

    def __init__(self) -> None:
        self.rows: np.ndarray | None = None
        self.pixels: torch.Tensor | None = None

    def __getitem__(self, rows: np.ndarray) -> torch.Tensor:
        assert self.rows is not None and np.array_equal(rows, self.rows), "the step asked for other images"
        return self.pixels

    def plain_batches(self, paths: list[str], model: RetrievalModel, plan: list[np.ndarray],
                      images_of: Callable[[np.ndarray], np.ndarray], device: torch.device, workers: int):
        """Yield each batch of `plan` once a DataLoader (`workers` processes, prefetching) has decoded its images
        and they are on the device."""
        loader = DataLoader(ImageFiles(paths, model), batch_sampler=[images_of(b) for b in plan],
                            num_workers=workers, pin_memory=device.type == "cuda",
                            persistent_workers=False, prefetch_factor=4 if workers else None)
        for batch, (pixels, _) in zip(plan, loader, strict=True):
            self.rows, self.pixels = images_of(batch), pixels.to(device, non_blocking=True)
            yield batch
