"""Stage 1, semantic warm-up: align images with their attribute-aware captions (contrastive, both towers).

Images come from the decoded-image store; images without a caption (no attribute known) take no part, since an
empty caption would teach nothing. Under torchrun each rank encodes its slice of the global batch and the loss is
computed on the gathered features (pipeline/training/distributed.py)."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import torch

from pipeline.config import Params
from pipeline.data.store import ImageStore, StoredPixels
from pipeline.errors import PipelineError
from pipeline.features.encode import Pixels
from pipeline.models.clip import create_model, save_checkpoint, tokenizer_for
from pipeline.models.preprocessing import preprocessing
from pipeline.models.retrieval import RetrievalModel
from pipeline.paths import Paths
from pipeline.runtime import Runtime, run_distributed
from pipeline.training.loop import BatchLoss, open_live, train
from pipeline.training.losses import clip_loss
from pipeline.training.resume import EpochCheckpoint, run_key


def run(params: Params, paths: Paths) -> None:
    """The `stage1` stage: in this process, or under torchrun with `compute.processes` processes."""
    run_distributed(params.compute, "stages.stage1", lambda runtime: train_stage1(params, runtime, paths))


def train_stage1(params: Params, runtime: Runtime, paths: Paths) -> None:
    """Train both towers on the training images' captions for `stage1.epochs`; save the checkpoint."""
    settings = params.stage1
    model = create_model(params.model, params.seed)
    captions = pd.read_parquet(paths.captions)
    captions = captions[(captions["split"] == "train") & (captions["caption"] != "")].reset_index(drop=True)
    if len(captions) < 2 and settings.epochs:
        raise PipelineError(f"stage 1 aligns images with their captions, but {paths.captions} has no train image "
                            f"with a caption (the catalog backend found no attribute tags); use an MLLM "
                            f"caption.backend or set stage1.epochs: 0 to start stage 2 from the base model.")
    trained = trained_parameters(model)  # before DDP, which registers what requires a gradient
    encoder = runtime.prepare(model)
    if settings.epochs:
        store = ImageStore.open(paths.image_store)
        store.check(preprocessing(model), "model.arch / model.pretrained / model.preprocess")
        captions, rows, _ = store.select(captions)
        pixels: Pixels = StoredPixels(store, rows, runtime.device)
    else:  # the base model is the checkpoint: no step runs, no image is read
        captions, pixels = captions.iloc[:0], torch.empty(0, dtype=torch.uint8)
    tokens = tokenizer_for(model.arch)(captions["caption"].tolist()).to(runtime.device)
    caption_id = torch.from_numpy(pd.factorize(captions["caption"])[0]).to(runtime.device)
    batch_loss = caption_alignment_loss(encoder, pixels, tokens, caption_id, runtime, settings.temperature)
    tracked = {"seed": params.seed, "model": params.model.model_dump(), "stage1": settings.model_dump(),
               "precision": params.compute.precision, "processes": runtime.world.size}
    checkpoint = EpochCheckpoint(paths.resume_dir("stage1"), run_key(tracked, [paths.captions, paths.image_store]))
    with open_live(paths.stage1_live) if runtime.world.is_main else contextlib.nullcontext() as live:
        train([(trained, settings.lr)], batch_loss, len(captions), settings, params.seed, live, [model],
              runtime, desc="stage1", checkpoint=checkpoint, stateful={"model": model})
    if runtime.world.is_main:
        save_checkpoint(paths.stage1_dir, model)
        checkpoint.clear()


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
