"""Stage 1, semantic warm-up: align images with their attribute-aware captions (contrastive, both towers).

Images come from the decoded-image store; images without a caption (no attribute known) take no part, since an
empty caption would teach nothing. Under torchrun each rank encodes its slice of the global batch and the loss is
computed on the gathered features (pipeline/training/distributed.py). With an MLLM's vision tower as the image
encoder (`model.vision`), this is what aligns it with the text tower: its new projection learns at
`stage1.projection_lr`, the tower itself at `stage1.vision_lr` (0: frozen)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch

from pipeline.config import Params, Stage1Params
from pipeline.data.store import ImageStore, StoredPixels
from pipeline.errors import PipelineError
from pipeline.features.encode import Pixels
from pipeline.models.clip import create_model, save_checkpoint, tokenizer_for
from pipeline.models.preprocessing import preprocessing
from pipeline.models.retrieval import RetrievalModel
from pipeline.models.vision_tower import MLLMVisionTower
from pipeline.paths import Paths
from pipeline.runtime import Runtime
from pipeline.training.distributed import gather, run_distributed, shard
from pipeline.training.loop import BatchLoss, ParameterGroup, open_live, train
from pipeline.training.losses import clip_loss
from pipeline.training.report import reported
from pipeline.training.resume import EpochCheckpoint, run_key


def run(params: Params, paths: Paths) -> None:
    """The `stage1` stage: in this process, or under torchrun with `compute.processes` processes."""
    run_distributed(params.compute, "stages.stage1", lambda runtime: train_stage1(params, runtime, paths))


def train_stage1(params: Params, runtime: Runtime, paths: Paths) -> None:
    """Train both towers on the training images' captions for `stage1.epochs`; save the checkpoint and the run's
    report (time, peak memory)."""
    reported("stage1", params.stage1.epochs, paths.training_report("stage1"), runtime,
             lambda: _train(params, runtime, paths))


def _train(params: Params, runtime: Runtime, paths: Paths) -> tuple[RetrievalModel, int]:
    settings = params.stage1
    model = create_model(params.model, params.seed)
    captions = pd.read_parquet(paths.captions)
    captions = captions[(captions["split"] == "train") & (captions["caption"] != "")].reset_index(drop=True)
    if len(captions) < 2 and settings.epochs:
        raise PipelineError(f"stage 1 aligns images with their captions, but {paths.captions} has no train image "
                            f"with a caption (the catalog backend found no attribute tags); use an MLLM "
                            f"caption.backend or set stage1.epochs: 0 to start stage 2 from the base model.")
    groups = parameter_groups(model, settings)  # before DDP, which registers what requires a gradient
    encoder = runtime.prepare(model)
    if settings.epochs:
        store = ImageStore.open(paths.image_store)
        store.check(preprocessing(model), "model.arch / model.pretrained / model.preprocess / model.vision")
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
        train(groups, batch_loss, len(captions), settings, params.seed, live, [model],
              runtime, desc="stage1", checkpoint=checkpoint, stateful={"model": model})
    if runtime.world.is_main:
        save_checkpoint(paths.stage1_dir, model)
        checkpoint.clear()
    return model, len(captions)


def parameter_groups(model: RetrievalModel, settings: Stage1Params) -> list[ParameterGroup]:
    """What stage 1 trains, each part at its learning rate: both towers at stage1.lr; with an MLLM vision tower,
    the text tower at stage1.lr, the projection at stage1.projection_lr and the MLLM tower at stage1.vision_lr (0:
    frozen, and its checkpoint then names it rather than holding it)."""
    visual = model.clip.visual
    if not isinstance(visual, MLLMVisionTower):
        if settings.vision_lr:
            raise PipelineError(f"stage1.vision_lr = {settings.vision_lr} is the learning rate of an MLLM vision "
                                f"tower, but model.vision is \"\"; set model.vision, or leave stage1.vision_lr at 0 "
                                f"(the architecture's own image tower trains at stage1.lr).")
        return [(trained_parameters(model), settings.lr)]
    train_tower = settings.vision_lr > 0
    visual.weights_in_checkpoint = train_tower and settings.epochs > 0
    image_side = set(map(id, visual.parameters()))
    text = _marked(((n, p) for n, p in model.named_parameters() if id(p) not in image_side), trained=True)
    groups = [(text, settings.lr), (_marked(visual.head.named_parameters(), trained=True), settings.projection_lr)]
    tower = _marked(visual.tower.named_parameters(), trained=train_tower)
    return groups + [(tower, settings.vision_lr)] if train_tower else groups


def trained_parameters(model: RetrievalModel) -> list[torch.nn.Parameter]:
    """Both towers, whole."""
    return _marked(model.named_parameters(), trained=True)


def _marked(named: Iterable[tuple[str, torch.nn.Parameter]], trained: bool) -> list[torch.nn.Parameter]:
    """The parameters of `named` marked trained (those returned) or frozen. The logit scale (and bias) stay fixed,
    since the loss uses stage1.temperature, and the combiner is stage 2's. Whatever is not trained is marked
    frozen, as DDP expects a gradient for every parameter that requires one."""
    chosen = []
    for name, parameter in named:
        parameter.requires_grad_(trained and not name.startswith(("clip.logit_", "combiner.")))
        if parameter.requires_grad:
            chosen.append(parameter)
    return chosen


def caption_alignment_loss(encoder: torch.nn.Module, pixels: Pixels, tokens: torch.Tensor, caption_id: torch.Tensor,
                           runtime: Runtime, temperature: float) -> BatchLoss:
    """Stage 1's step: image-caption InfoNCE over the global batch (each rank encodes its slice); rows with the
    same caption are not each other's negatives."""
    world, device = runtime.world, runtime.device

    def batch_loss(batch: np.ndarray, rng: np.random.Generator, epoch: int) -> torch.Tensor:
        local = shard(world, batch)
        image, text = encoder(pixels[local], tokens[torch.from_numpy(local).to(device)])
        ids = caption_id[torch.from_numpy(batch).to(device)]
        return clip_loss(gather(world, image, len(batch)), gather(world, text, len(batch)), temperature,
                         same_text=ids[:, None] == ids[None, :])

    return batch_loss
