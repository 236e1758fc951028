"""Which text tower should answer a text-only search ("a red floral dress"): stage 1's, aligned with captions against
the image features the gallery holds, or stage 2's, trained on modification texts composed with a reference?

    python benchmarks/text_queries.py          # after `dvc repro`: models/stage1, models/stage2, the image store

Every val image's caption is a query, searched within its category's val images by both text towers against the same
gallery features (stage 2 keeps stage 1's image tower, so the features are the same). Attribute precision@10: for
each attribute of the query's image (colour, pattern, sleeves, neckline, length), the share of the top 10 that have
the same value, averaged; also for short queries of one attribute ("a red dress": colour precision@10). Higher is
better; chance is the share of the category's val images with that value.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common import describe, markdown_table
from pipeline.data.store import ImageStore
from pipeline.features.encode import stored_image_features, text_features
from pipeline.models.clip import load_checkpoint, tokenizer_for
from pipeline.paths import Paths

FIELDS = ("colour", "pattern", "sleeves", "neckline", "length")


def attributes(captions: pd.DataFrame) -> pd.DataFrame:
    """The fields compared, one column each, from the captions table's attribute JSON ("" where unknown)."""
    parsed = [json.loads(a) if a else {} for a in captions["attributes"]]
    return pd.DataFrame({"colour": [(a.get("colors") or [""])[0] for a in parsed],
                         **{f: [a.get(f) or "" for a in parsed] for f in FIELDS[1:]}})


def precision_at_10(features: torch.Tensor, queries: torch.Tensor, groups: np.ndarray, values: pd.DataFrame,
                    fields: tuple[str, ...]) -> tuple[float, float]:
    """Mean over queries (query i is image i) and `fields` of the share of the top 10, within the query's group,
    sharing the query image's value; and the same share for random top 10s (chance)."""
    scores = (queries @ features.T).numpy()
    scores[groups[:, None] != groups[None, :]] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    found, chance = [], []
    for field in fields:
        column = values[field].to_numpy()
        known = column != ""
        found.append((column[top] == column[:, None])[known].mean())
        same_group = groups[:, None] == groups[None, :]
        chance.append(((column[None, :] == column[:, None]) & same_group).sum(1)[known].mean()
                      / same_group.sum(1)[known].mean())
    return float(np.mean(found)), float(np.mean(chance))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."))
    args = parser.parse_args()
    paths = Paths(args.root)
    stage2, stage1 = load_checkpoint(paths.stage2_dir).eval(), load_checkpoint(paths.stage1_dir).eval()
    store = ImageStore.open(paths.image_store)
    captions = pd.read_parquet(paths.captions)
    val, rows, _ = store.select(captions[captions["split"] == "val"].reset_index(drop=True))
    features = stored_image_features(stage2, store, rows, 256)
    groups, values = val["category"].to_numpy(), attributes(val)
    texts = {"caption": val["caption"].tolist(),
             "colour": [f"a {c} {g}" if c else f"a {g}" for c, g in zip(values["colour"], groups, strict=True)]}
    print(describe(torch.device("cpu")))
    print(f"{len(val)} val images in {len(set(groups))} categories; models {paths.stage1_dir}, {paths.stage2_dir}")
    table = []
    for query, fields in (("caption", FIELDS), ("colour", ("colour",))):
        for name, model in (("stage 1", stage1), ("stage 2", stage2)):
            encoded = text_features(model, tokenizer_for(model.arch), texts[query], 256)
            found, chance = precision_at_10(features, encoded, groups, values, fields)
            table.append([f"{query} ({', '.join(fields)})", name, f"{100 * found:.1f}", f"{100 * chance:.1f}"])
    print(markdown_table(["queries (attributes scored)", "text tower", "attribute precision@10 %", "chance %"],
                         table))


if __name__ == "__main__":
    main()
