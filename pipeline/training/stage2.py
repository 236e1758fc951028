"""Stage 2, retrieval: composed-query contrastive training with coarse, hard and static negatives.

The image tower stays frozen at its stage-1 weights, so every gallery image has one static feature (the `embed`
stage's output). That makes negatives cheap to scale: each query is contrasted with its target against
(1) the other targets in the batch (coarse negatives), (2) its k mined hard negatives, and (3) a random sample
of `stage2.static_negatives` static gallery features shared by the batch. Only the text tower and the combiner
(if any) train, as in CLIP4Cir's second stage and SPN4CIR. Under torchrun each rank encodes its slice of the
batch's query texts; the composition and the loss run on the gathered global batch (pipeline/training/distributed.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.config import NegativesParams, Params, Stage2Params
from pipeline.errors import PipelineError
from pipeline.evaluation.protocols import QuerySet, headline
from pipeline.features.table import read_features
from pipeline.models.clip import load_checkpoint, save_checkpoint, tokenizer_for
from pipeline.models.retrieval import RetrievalModel
from pipeline.negatives.false_negatives import answer_groups
from pipeline.negatives.mine import MiningGallery, mine_negatives
from pipeline.paths import Paths
from pipeline.runtime import Runtime
from pipeline.training.distributed import gather, run_distributed, shard
from pipeline.training.loop import BatchLoss, open_live, train
from pipeline.training.losses import composed_retrieval_loss
from pipeline.training.report import reported
from pipeline.training.resume import EpochCheckpoint, run_key
from pipeline.triplets.query_text import training_query_texts


def hard_negative_indices(triplets: pd.DataFrame, negatives: pd.DataFrame, position: dict[str, int], k: int
                          ) -> torch.Tensor:
    """[T, k] bank indices of each triplet's mined negatives, -1 where fewer were mined."""
    mined = dict(zip(negatives["triplet_id"], negatives["negatives"], strict=True))
    out = torch.full((len(triplets), k), -1, dtype=torch.long)
    for row, triplet_id in enumerate(triplets["triplet_id"]):
        names = [n for n in mined.get(triplet_id, [])[:k] if n in position]
        out[row, :len(names)] = torch.tensor([position[n] for n in names], dtype=torch.long)
    return out


def bank_rows(images: pd.DataFrame) -> np.ndarray:
    """The feature rows of the static bank: one per training image. An image listed under two categories (as about
    3% of FashionIQ's are) has two identical rows, and the second would be a static negative equal to the target
    that the loss's target mask (by bank index) cannot see."""
    rows = np.flatnonzero((images["split"] == "train").to_numpy())
    return rows[~images["name"].iloc[rows].duplicated().to_numpy()]


def query_text_variants(triplets: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Every training query text a triplet can be given (its relative-text forms, each with the reference prompt),
    as distinct texts and a [T, 4] table of their positions, so stage 2 tokenizes once rather than every step."""
    forms = [training_query_texts(c1, c2, prompt)
             for c1, c2, prompt in triplets[["caption1", "caption2", "prompt"]].to_numpy()]
    texts, positions = np.unique(np.array(forms, dtype=object).reshape(-1), return_inverse=True)
    return texts.tolist(), positions.reshape(len(triplets), 4)


@dataclass
class StaticBank:
    """Stage 2's frozen side, on the device: the training images' static features, their answer groups (images in
    a target's group are never its negatives: pipeline/negatives/false_negatives.py) and, per triplet, the bank
    rows of its reference and its target."""

    features: torch.Tensor  # [N, D]
    answer_group: torch.Tensor  # [N]
    reference: torch.Tensor  # [T]
    target: torch.Tensor  # [T]


@dataclass
class Remining:
    """What stage 2 mines again with: the `mine` stage's rule and gallery (pipeline/negatives/mine.py), stage 2's
    triplets, and the static-bank position of each gallery row."""

    gallery: MiningGallery
    triplets: pd.DataFrame
    to_bank: np.ndarray  # [N]
    settings: NegativesParams
    seed: int

    @classmethod
    def build(cls, images: pd.DataFrame, features: np.ndarray, captions: pd.DataFrame, triplets: pd.DataFrame,
              position: dict[str, int], settings: NegativesParams, seed: int) -> Remining:
        gallery = MiningGallery.build(images, features, captions, settings.false_negatives)
        return cls(gallery, triplets, gallery.images["name"].map(position).to_numpy(), settings, seed)


class HardNegatives:
    """Each triplet's mined negatives [T, k] for the epoch being trained: the `mine` stage's (searched around the
    target or the stage-1 model's zero-shot query), and with `stage2.remine_every: N` searched again every N epochs
    by the same rule (pipeline/negatives/mine.py) around the model in training's own composed query, so that they
    stay the images this model confuses with the target rather than those the base model did. None before
    `stage2.hard_negatives_from_epoch` (coarse negatives only)."""

    def __init__(self, offline: torch.Tensor, model: RetrievalModel, query_tokens: torch.Tensor, bank: StaticBank,
                 remining: Remining | None, schedule: Stage2Params, runtime: Runtime):
        self.current, self.model, self.query_tokens, self.bank = offline, model, query_tokens, bank
        self.remining, self.schedule, self.runtime = remining, schedule, runtime
        self.mined_at = 0

    def for_epoch(self, epoch: int) -> torch.Tensor:
        if epoch < self.schedule.hard_negatives_from_epoch:
            return self.current[:, :0]
        every = self.schedule.remine_every
        if every and self.remining is not None and epoch // every > self.mined_at // every:
            self.current, self.mined_at = self._remine(), epoch
        return self.current

    def state_dict(self) -> dict[str, Any]:
        """The negatives in use and when they were mined: a resumed run must not mine again early."""
        return {"current": self.current.cpu(), "mined_at": self.mined_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current, self.mined_at = state["current"].to(self.current.device), int(state["mined_at"])

    @torch.no_grad()
    def _remine(self, batch_size: int = 1024) -> torch.Tensor:
        """Each triplet's negatives around the model's composed query (validation text form, dropout off), as
        bank positions: every rank computes the same set."""
        training = self.model.training
        self.model.eval()
        with self.runtime.autocast():
            text = torch.cat([self.model.encode_texts(self.query_tokens[start:start + batch_size])
                              for start in range(0, len(self.query_tokens), batch_size)])
            query = self.model.compose(self.bank.features[self.bank.reference], text).float()
        self.model.train(training)
        remining = self.remining
        rows, _, _ = mine_negatives(remining.gallery, remining.triplets, query.cpu().numpy(), remining.settings,
                                    remining.seed)
        found = np.where(rows >= 0, remining.to_bank[np.maximum(rows, 0)], -1)
        return torch.from_numpy(found).to(self.bank.features.device)


def composed_query_loss(encoder: torch.nn.Module, model: RetrievalModel, tokens: torch.Tensor, variants: np.ndarray,
                        bank: StaticBank, hard: HardNegatives, params: Stage2Params, runtime: Runtime) -> BatchLoss:
    """Stage 2's step: each triplet's query text drawn from its four forms, encoded (each rank its slice), composed
    with the reference's static feature, and contrasted with the target against in-batch, mined and static
    negatives over the global batch."""
    world, device = runtime.world, runtime.device

    def batch_loss(batch: np.ndarray, rng: np.random.Generator, epoch: int) -> torch.Tensor:
        form = [int(rng.integers(4)) for _ in batch]  # one draw per example, in order (the seed's stream)
        chosen = variants[batch, form]
        _, text = encoder(tokens=tokens[torch.from_numpy(shard(world, chosen)).to(device)])
        index = torch.from_numpy(batch).to(device)
        query = model.compose(bank.features[bank.reference[index]], gather(world, text, len(batch)))
        n = len(bank.features)
        static = torch.from_numpy(rng.choice(n, size=min(params.static_negatives, n), replace=False)).to(device)
        mined = hard.for_epoch(epoch)[index]
        return composed_retrieval_loss(query, bank.features, bank.target[index], mined, static, params.temperature,
                                       bank.answer_group)

    return batch_loss


def run(params: Params, paths: Paths) -> None:
    """The `stage2` stage: in this process, or under torchrun with `compute.processes` processes."""
    run_distributed(params.compute, "stages.stage2", lambda runtime: train_stage2(params, runtime, paths))


def train_stage2(params: Params, runtime: Runtime, paths: Paths) -> None:
    """Train the text tower and the combiner from the stage-1 checkpoint against the static bank; validate each
    epoch by the benchmark's protocol; save the checkpoint and the run's report (time, peak memory)."""
    reported("stage2", params.stage2.epochs, paths.training_report("stage2"), runtime,
             lambda: _train(params, runtime, paths))


def _train(params: Params, runtime: Runtime, paths: Paths) -> tuple[RetrievalModel, int]:
    settings, negatives, device = params.stage2, params.negatives, runtime.device
    if settings.remine_every and negatives.anchor == "target":
        raise PipelineError(f"stage2.remine_every = {settings.remine_every} mines again around the model's composed "
                            f"query, but negatives.anchor = 'target' mines around the target, whose frozen static "
                            f"feature finds the same negatives every time; set negatives.anchor to 'query', or "
                            f"stage2.remine_every to 0.")
    model = load_checkpoint(paths.stage1_dir)
    torch.manual_seed(params.seed + 1)
    model.set_composition(settings.composition)
    text_params, combiner_params = model.trainable_query_side()
    trained = {id(p) for p in text_params + combiner_params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained)  # DDP expects a gradient for every parameter that requires one
    encoder = runtime.prepare(model)
    tokenizer = tokenizer_for(model.arch)

    images, features = read_features(paths.image_features)
    train_rows = bank_rows(images)
    bank_images = images.iloc[train_rows]
    position = dict(zip(bank_images["name"], range(len(bank_images)), strict=True))
    captions = pd.read_parquet(paths.captions)
    triplets = pd.read_parquet(paths.triplets("train"))
    triplets = triplets[triplets["reference"].isin(position) & triplets["target"].isin(position)]
    triplets = triplets.reset_index(drop=True)
    bank = StaticBank(
        features=torch.from_numpy(features[train_rows]).to(device),
        answer_group=torch.from_numpy(answer_groups(bank_images, negatives.false_negatives, captions)).to(device),
        reference=torch.tensor(triplets["reference"].map(position).to_numpy(), device=device),
        target=torch.tensor(triplets["target"].map(position).to_numpy(), device=device))
    offline = hard_negative_indices(triplets, pd.read_parquet(paths.negatives), position, negatives.k).to(device)
    texts, variants = query_text_variants(triplets)
    tokens = tokenizer(texts).to(device)
    remining = (Remining.build(images, features, captions, triplets, position, negatives, params.seed)
                if settings.remine_every and negatives.k else None)  # its gallery only when it will mine
    hard = HardNegatives(offline, model, tokens[torch.from_numpy(variants[:, 0]).to(device)], bank, remining,
                         settings, runtime)
    batch_loss = composed_query_loss(encoder, model, tokens, variants, bank, hard, settings, runtime)

    is_val = (images["split"] == "val").to_numpy()
    validation = QuerySet.build(images[is_val], paths.triplets("val"))
    val_features = torch.from_numpy(features[is_val])

    def validate() -> dict[str, float]:
        rankings = validation.rankings(model, tokenizer, val_features, "composed", 256, runtime)
        return {f"val/{name}": value for name, value in headline(params.data.source, rankings).items()}

    tracked = {"seed": params.seed, "stage2": settings.model_dump(), "negatives": negatives.model_dump(),
               "source": params.data.source, "precision": params.compute.precision, "processes": runtime.world.size}
    inputs = [paths.stage1_dir, paths.captions, paths.embeddings_dir, paths.triplets_dir, paths.negatives]
    checkpoint = EpochCheckpoint(paths.resume_dir("stage2"), run_key(tracked, inputs))
    with open_live(paths.stage2_live) if runtime.world.is_main else contextlib.nullcontext() as live:
        train([(text_params, settings.text_lr or settings.lr), (combiner_params, settings.lr)], batch_loss,
              len(triplets), settings, params.seed, live, [model], runtime, validate=validate, desc="stage2",
              checkpoint=checkpoint, stateful={"model": model, "hard_negatives": hard})
    if runtime.world.is_main:
        save_checkpoint(paths.stage2_dir, model)
        checkpoint.clear()
    return model, len(triplets)
