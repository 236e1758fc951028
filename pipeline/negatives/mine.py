"""The `mine` stage: `negatives.k` hard negatives per training triplet, searched with FAISS among the training
images of its category (pipeline/negatives/hard.py), with the static features of the `embed` stage.

`negatives.anchor` says where the search starts (the target, or the zero-shot composed query),
`negatives.max_target_similarity` and `negatives.false_negatives` what is never a negative, `negatives.index` which
FAISS index searches.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from pipeline.config import Params
from pipeline.features.table import read_features
from pipeline.io import write_json, write_parquet
from pipeline.negatives.false_negatives import answer_groups
from pipeline.negatives.hard import mine_hard_negatives, mining_queries
from pipeline.paths import Paths

NEGATIVES_SCHEMA = pa.schema([("triplet_id", pa.string()), ("negatives", pa.list_(pa.string())),
                              ("scores", pa.list_(pa.float32()))])


def run(params: Params, paths: Paths) -> dict[str, float]:
    negatives = params.negatives
    images, image_feats = read_features(paths.image_features)
    groups = answer_groups(images, negatives.false_negatives, pd.read_parquet(paths.captions))
    queries, query_feats = read_features(paths.query_features)
    query_row = dict(zip(queries["triplet_id"], range(len(queries)), strict=True))
    triplets = pd.read_parquet(paths.triplets("train"))
    rows = []
    for category, in_category in triplets.groupby("category", sort=True):
        gallery = images[(images["split"] == "train") & (images["category"] == category)]
        position = dict(zip(gallery["name"], range(len(gallery)), strict=True))
        in_category = in_category[in_category["reference"].isin(position) & in_category["target"].isin(position)]
        gallery_feats = image_feats[gallery.index.to_numpy()]
        reference = gallery_feats[in_category["reference"].map(position).to_numpy()]
        text = query_feats[in_category["triplet_id"].map(query_row).to_numpy()]
        targets = in_category["target"].map(position).to_numpy()
        composed = mining_queries(negatives.anchor, reference, text, gallery_feats[targets])
        found, scores = mine_hard_negatives(composed, gallery_feats, targets, negatives.k, negatives.index,
                                            negatives.max_target_similarity, params.seed,
                                            groups[gallery.index.to_numpy()])
        names = gallery["name"].to_numpy()
        for triplet_id, idx, score in zip(in_category["triplet_id"], found, scores, strict=True):
            valid = idx >= 0
            rows.append({"triplet_id": triplet_id, "negatives": names[idx[valid]].tolist(),
                         "scores": score[valid].astype(float).tolist()})
    table = pd.DataFrame(rows, columns=NEGATIVES_SCHEMA.names)
    write_parquet(paths.negatives, pa.Table.from_pandas(table, schema=NEGATIVES_SCHEMA, preserve_index=False))
    counts = table["negatives"].map(len) if len(table) else pd.Series([0])
    report = {"triplets": len(table), "k": negatives.k, "mean_negatives": float(counts.mean()),
              "short_of_k": int((counts < negatives.k).sum())}
    write_json(paths.negatives_dir / "report.json", report)
    return report
