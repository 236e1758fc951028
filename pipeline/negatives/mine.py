"""Mining hard negatives, one rule for the `mine` stage and for stage 2's re-mining (`stage2.remine_every`):
`negatives.k` per training triplet, searched with FAISS among the training images of the triplet's category
(pipeline/negatives/hard.py), over the static features of the `embed` stage.

`negatives.anchor` says where the search starts: the target's own feature, or the composed query (the stage-1
model's normalised sum in `mine`, the model in training's own composition when stage 2 mines again).
`negatives.max_target_similarity` and `negatives.false_negatives` say what is never a negative, `negatives.index`
which FAISS index searches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from pipeline.config import NegativesParams, Params
from pipeline.features.table import read_features
from pipeline.io import write_json, write_parquet
from pipeline.models.composition import normalised_sum
from pipeline.negatives.false_negatives import answer_groups
from pipeline.negatives.hard import mine_hard_negatives
from pipeline.paths import Paths

NEGATIVES_SCHEMA = pa.schema([("triplet_id", pa.string()), ("negatives", pa.list_(pa.string())),
                              ("scores", pa.list_(pa.float32()))])


@dataclass
class MiningGallery:
    """The training images negatives are mined among (the train rows of the `embed` stage's image table: an image
    listed under two categories is a row of each), their static features and answer groups."""

    images: pd.DataFrame  # name, category
    features: np.ndarray  # [N, D]
    groups: np.ndarray    # [N] (pipeline/negatives/false_negatives.py)

    @classmethod
    def build(cls, images: pd.DataFrame, features: np.ndarray, captions: pd.DataFrame, rule: str) -> MiningGallery:
        """From the `embed` stage's image table and features, the caption table and `negatives.false_negatives`."""
        train = images[images["split"] == "train"]
        rows = train.index.to_numpy()
        return cls(train[["name", "category"]].reset_index(drop=True), features[rows],
                   answer_groups(train, rule, captions))

    def features_of(self, names: pd.Series) -> np.ndarray:
        """[len(names), D]: each named image's feature (zeros for a name not among the training images)."""
        row = dict(zip(self.images["name"], range(len(self.images)), strict=False))
        found = names.map(row)
        out = np.zeros((len(names), self.features.shape[1]), dtype=self.features.dtype)
        present = found.notna().to_numpy()
        out[present] = self.features[found[present].astype(int).to_numpy()]
        return out


def mine_negatives(gallery: MiningGallery, triplets: pd.DataFrame, composed: np.ndarray, settings: NegativesParams,
                   seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each triplet (columns category, reference, target; `composed[i]` its composed query), the `settings.k`
    rows of `gallery` in its category that the anchor rule finds, hardest first, that are not an answer.

    Returns rows [T, k] and scores [T, k] (-1 / NaN where fewer qualify), and which triplets could be mined at all
    [T] (reference and target among their category's training images)."""
    k = settings.k
    rows = np.full((len(triplets), k), -1, dtype=np.int64)
    scores = np.full((len(triplets), k), np.nan, dtype=np.float32)
    minable = np.zeros(len(triplets), dtype=bool)
    categories = gallery.images["category"].to_numpy()
    for category, members in triplets.groupby("category", sort=True).indices.items():
        in_category = np.flatnonzero(categories == category)
        position = dict(zip(gallery.images["name"].to_numpy()[in_category], range(len(in_category)), strict=True))
        reference = triplets["reference"].iloc[members].map(position)
        target = triplets["target"].iloc[members].map(position)
        present = (reference.notna() & target.notna()).to_numpy()
        members, target = members[present], target[present].astype(int).to_numpy()
        features = gallery.features[in_category]
        anchors = features[target] if settings.anchor == "target" else composed[members]
        found, found_scores = mine_hard_negatives(anchors, features, target, k, settings.index,
                                                  settings.max_target_similarity, seed, gallery.groups[in_category])
        rows[members] = np.where(found >= 0, in_category[np.maximum(found, 0)], -1)
        scores[members], minable[members] = found_scores, True
    return rows, scores, minable


def run(params: Params, paths: Paths) -> dict[str, float]:
    """The `mine` stage: every training triplet's negatives, around the stage-1 model's zero-shot composed query
    (the normalised sum of its static reference and text features) when the anchor is the query."""
    negatives = params.negatives
    images, image_features = read_features(paths.image_features)
    gallery = MiningGallery.build(images, image_features, pd.read_parquet(paths.captions), negatives.false_negatives)
    queries, query_features = read_features(paths.query_features)
    query_row = dict(zip(queries["triplet_id"], range(len(queries)), strict=True))
    triplets = pd.read_parquet(paths.triplets("train"))
    text = query_features[triplets["triplet_id"].map(query_row).to_numpy()]
    composed = normalised_sum(torch.from_numpy(gallery.features_of(triplets["reference"])),
                              torch.from_numpy(text)).numpy()
    rows, scores, minable = mine_negatives(gallery, triplets, composed, negatives, params.seed)
    names = gallery.images["name"].to_numpy()
    records = []
    for i in np.argsort(triplets["category"].to_numpy(), kind="stable"):  # by category, as the stage always wrote
        if minable[i]:
            found = rows[i] >= 0
            records.append({"triplet_id": triplets["triplet_id"].iat[i], "negatives": names[rows[i][found]].tolist(),
                            "scores": scores[i][found].astype(float).tolist()})
    table = pd.DataFrame(records, columns=NEGATIVES_SCHEMA.names)
    write_parquet(paths.negatives, pa.Table.from_pandas(table, schema=NEGATIVES_SCHEMA, preserve_index=False))
    counts = table["negatives"].map(len) if len(table) else pd.Series([0])
    report = {"triplets": len(table), "k": negatives.k, "mean_negatives": float(counts.mean()),
              "short_of_k": int((counts < negatives.k).sum())}
    write_json(paths.negatives_dir / "report.json", report)
    return report
