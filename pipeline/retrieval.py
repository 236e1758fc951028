"""Stage 2, retrieval: composed-query contrastive training with coarse, hard and static negatives.

The image tower stays frozen at its stage-1 weights, so every gallery image has one static feature (the `embed`
stage's output). That makes negatives cheap to scale: each query is contrasted with its target against
(1) the other targets in the batch (coarse negatives), (2) its k mined hard negatives, and (3) a random sample
of `stage2.static_negatives` static gallery features shared by the batch. Only the text tower and the combiner
(if any) train, as in CLIP4Cir's second stage and SPN4CIR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.config import Stage2Params
from pipeline.device import compute_device
from pipeline.evaluation import Protocol, QuerySet, headline
from pipeline.features import read_features
from pipeline.losses import composed_retrieval_loss
from pipeline.models import load_checkpoint, save_checkpoint, tokenizer_for
from pipeline.train import open_live, train
from pipeline.triplets import query_text, training_relative_text


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


def stage2(params: Stage2Params, k: int, seed: int, protocol: Protocol, stage1_dir: Path, embeddings_dir: Path,
           triplets_dir: Path, negatives_path: Path, out_dir: Path, live_dir: Path) -> None:
    device = compute_device()
    model = load_checkpoint(stage1_dir)
    torch.manual_seed(seed + 1)
    model.set_composition(params.composition)
    model.to(device)
    for p in model.clip.visual.parameters():
        p.requires_grad_(False)
    tokenizer = tokenizer_for(model.arch)

    images, features = read_features(embeddings_dir / "images.parquet")
    train_rows = bank_rows(images)
    bank = torch.from_numpy(features[train_rows]).to(device)
    position = dict(zip(images["name"].iloc[train_rows], range(len(bank)), strict=True))

    triplets = pd.read_parquet(triplets_dir / "train.parquet")
    triplets = triplets[triplets["candidate"].isin(position) & triplets["target"].isin(position)]
    triplets = triplets.reset_index(drop=True)
    reference = torch.tensor(triplets["candidate"].map(position).to_numpy(), device=device)
    target = torch.tensor(triplets["target"].map(position).to_numpy(), device=device)
    hard = hard_negative_indices(triplets, pd.read_parquet(negatives_path), position, k).to(device)
    captions = triplets[["caption1", "caption2", "prompt"]].to_numpy()

    def batch_loss(batch: np.ndarray, rng: np.random.Generator, epoch: int) -> torch.Tensor:
        texts = [query_text(training_relative_text(c1, c2, rng), prompt) for c1, c2, prompt in captions[batch]]
        index = torch.from_numpy(batch).to(device)
        query = model.compose(bank[reference[index]], model.encode_texts(tokenizer(texts)))
        static = torch.from_numpy(rng.choice(len(bank), size=min(params.static_negatives, len(bank)),
                                             replace=False)).to(device)
        mined = hard[index] if epoch >= params.hard_negatives_from_epoch else hard[index, :0]
        return composed_retrieval_loss(query, bank, target[index], mined, static, params.temperature)

    is_val = (images["split"] == "val").to_numpy()
    validation = QuerySet.build(images[is_val], triplets_dir / "val.parquet")
    val_features = torch.from_numpy(features[is_val])

    def validate() -> dict[str, float]:
        rankings = validation.rankings(model, tokenizer, val_features, "composed", 256)
        return {f"val/{name}": value for name, value in headline(protocol, rankings).items()}

    with open_live(live_dir) as live:
        text, combiner = model.trainable_query_side()
        train([(text, params.text_lr or params.lr), (combiner, params.lr)], batch_loss, len(triplets), params,
              seed, live, [model], validate=validate, desc="stage2")
    save_checkpoint(out_dir, model)
