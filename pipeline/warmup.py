"""Stage 1, semantic warm-up: align images with their attribute-aware captions (contrastive, both towers).

Images come from the decoded-image store; images without a caption (no attribute known) take no part, since an
empty caption would teach nothing. Under torchrun each rank encodes its slice of the global batch and the loss is
computed on the gathered features (pipeline/distributed.py)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.config import ModelParams, TrainParams
from pipeline.data.store import ImageStore, StoredPixels
from pipeline.device import Runtime
from pipeline.errors import PipelineError
from pipeline.features import Pixels
from pipeline.losses import clip_loss
from pipeline.models import RetrievalModel, create_model, preprocessing, save_checkpoint, tokenizer_for
from pipeline.train import BatchLoss, open_live, train


def stage1(model_params: ModelParams, params: TrainParams, seed: int, runtime: Runtime, captions_path: Path,
           store_dir: Path, out_dir: Path, live_dir: Path) -> None:
    model = create_model(model_params, seed)
    captions = pd.read_parquet(captions_path)
    captions = captions[(captions["split"] == "train") & (captions["caption"] != "")].reset_index(drop=True)
    if len(captions) < 2 and params.epochs:
        raise PipelineError(f"stage 1 aligns images with their captions, but {captions_path} has no train image with "
                            f"a caption (the catalog backend found no attribute tags); use an MLLM caption.backend "
                            f"or set stage1.epochs: 0 to start stage 2 from the base model.")
    trained = trained_parameters(model)  # before DDP, which registers what requires a gradient
    encoder = runtime.prepare(model)
    if params.epochs:
        store = ImageStore.open(store_dir)
        store.check(preprocessing(model), "model.arch / model.pretrained / model.preprocess")
        captions, rows, _ = store.select(captions)
        pixels: Pixels = StoredPixels(store, rows, runtime.device)
    else:  # the base model is the checkpoint: no step runs, no image is read
        captions, pixels = captions.iloc[:0], torch.empty(0, dtype=torch.uint8)
    tokens = tokenizer_for(model.arch)(captions["caption"].tolist()).to(runtime.device)
    caption_id = torch.from_numpy(pd.factorize(captions["caption"])[0]).to(runtime.device)
    batch_loss = caption_alignment_loss(encoder, pixels, tokens, caption_id, runtime, params.temperature)
    with open_live(live_dir) if runtime.world.is_main else contextlib.nullcontext() as live:
        train([(trained, params.lr)], batch_loss, len(captions), params, seed, live, [model],
              runtime, desc="stage1")
    if runtime.world.is_main:
        save_checkpoint(out_dir, model)


def trained_parameters(model: RetrievalModel) -> list[torch.nn.Parameter]:
    """Both towers; the logit scale (and bias) stay fixed, since the loss uses stage1.temperature. They are also
    marked frozen, as DDP expects a gradient for every parameter that requires one."""
    trained = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not name.startswith(("clip.logit_", "combiner.")))
        if parameter.requires_grad:
            trained.append(parameter)
    return trained


def caption_alignment_loss(encoder: torch.nn.Module, pixels: Pixels, tokens: torch.Tensor, caption_id: torch.Tensor,
                           runtime: Runtime, temperature: float) -> BatchLoss:
    """Stage 1's step: image-caption InfoNCE over the global batch (each rank encodes its slice); rows with the
    same caption are not each other's negatives."""
    world, device = runtime.world, runtime.device

    def batch_loss(batch: np.ndarray, rng: np.random.Generator, epoch: int) -> torch.Tensor:
        local = world.shard(batch)
        image, text = encoder(pixels[local], tokens[torch.from_numpy(local).to(device)])
        ids = caption_id[torch.from_numpy(batch).to(device)]
        return clip_loss(world.gather(image, len(batch)), world.gather(text, len(batch)), temperature,
                         same_text=ids[:, None] == ids[None, :])

    return batch_loss
