"""The `mine` stage: k hard negatives per training triplet, searched with FAISS among its category's gallery.

A training query is composed from static features as at zero-shot time (sum of the normalised reference-image
and query-text features); its nearest gallery images that are not the target are the negatives the base model
would most confuse with it. With `negatives.anchor: target` the search starts from the target instead: its nearest
neighbours are the images most like the answer (the query-anchored set is mostly images like the reference).
Near-duplicates of the target (similarity to it at or above `negatives.max_target_similarity`) are skipped as likely
false negatives, and with `negatives.false_negatives: same_caption` so are images captioned exactly as the target.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.config import NegativesParams
from pipeline.false_negatives import answer_groups
from pipeline.feature_table import read_features
from pipeline.index import mine_hard_negatives
from pipeline.io import write_json, write_parquet


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def mining_queries(anchor: str, reference: np.ndarray, text: np.ndarray, target: np.ndarray) -> np.ndarray:
    """What the index is searched with: the zero-shot composed query (normalised sum of the reference-image and
    query-text features) or the target's own feature."""
    return target if anchor == "target" else _normalise(reference + text)


def mine_stage(params: NegativesParams, seed: int, embeddings_dir: Path, triplets_dir: Path, captions_path: Path,
               out_path: Path) -> dict[str, float]:
    images, image_feats = read_features(embeddings_dir / "images.parquet")
    groups = answer_groups(images, params.false_negatives, captions_path)
    queries, query_feats = read_features(embeddings_dir / "queries.parquet")
    query_row = dict(zip(queries["triplet_id"], range(len(queries)), strict=True))
    triplets = pd.read_parquet(triplets_dir / "train.parquet")
    rows = []
    for category, group in triplets.groupby("category", sort=True):
        gallery = images[(images["split"] == "train") & (images["category"] == category)]
        position = dict(zip(gallery["name"], range(len(gallery)), strict=True))
        group = group[group["candidate"].isin(position) & group["target"].isin(position)]
        gallery_feats = image_feats[gallery.index.to_numpy()]
        reference = gallery_feats[group["candidate"].map(position).to_numpy()]
        text = query_feats[group["triplet_id"].map(query_row).to_numpy()]
        targets = group["target"].map(position).to_numpy()
        composed = mining_queries(params.anchor, reference, text, gallery_feats[targets])
        found, scores = mine_hard_negatives(composed, gallery_feats, targets, params.k, params.index,
                                            params.max_target_similarity, seed, groups[gallery.index.to_numpy()])
        names = gallery["name"].to_numpy()
        for triplet_id, idx, score in zip(group["triplet_id"], found, scores, strict=True):
            valid = idx >= 0
            rows.append({"triplet_id": triplet_id, "negatives": names[idx[valid]].tolist(),
                         "scores": score[valid].astype(float).tolist()})
    table = pd.DataFrame(rows, columns=["triplet_id", "negatives", "scores"])
    schema = pa.schema([("triplet_id", pa.string()), ("negatives", pa.list_(pa.string())),
                        ("scores", pa.list_(pa.float32()))])
    write_parquet(out_path, pa.Table.from_pandas(table, schema=schema, preserve_index=False))
    counts = table["negatives"].map(len) if len(table) else pd.Series([0])
    report = {"triplets": len(table), "k": params.k, "mean_negatives": float(counts.mean()),
              "short_of_k": int((counts < params.k).sum())}
    write_json(out_path.with_name("report.json"), report)
    return report
