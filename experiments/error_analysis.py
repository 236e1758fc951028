"""Where a stage-2 model goes wrong: recall on the training queries next to the validation ones, and what kind of
gallery image outranks each query's target. Reads the workspace's outputs (run `dvc repro` or `dvc exp apply`
first); the demo catalogue's family layout is needed for the kinds.

    python experiments/error_analysis.py                      # models/stage2
    python experiments/error_analysis.py --checkpoint <dir>   # any stage-2 checkpoint over the same embeddings

Why it exists: whether hard negatives can help depends on what the errors are. They teach fine distinctions
(the reference, the target's family siblings, garments one attribute away); if the images that outrank targets
differ from them in many attributes, or the training queries are already ranked far better than the validation
ones, the limit is elsewhere. Next to each split's composed-query recall it prints stage 1's caption -> image
recall over the same static features (whether the image side carries the attributes at all), and last how many
mined negatives are attribute twins of their target. Kinds, for each image scored above a query's target: the
reference; a sibling (same demo family); a garment with the target's attributes exactly (a false negative); or
one differing in 1, 2, or 3+ of the comparable fields.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.captioning.attributes import Attributes
from pipeline.captioning.captions import caption_lookup
from pipeline.config import load_params
from pipeline.evaluation.metrics import recall_at_k
from pipeline.evaluation.protocols import QuerySet, Ranking
from pipeline.evaluation.ranking import rank
from pipeline.features.encode import text_features
from pipeline.features.table import read_features
from pipeline.models.clip import load_checkpoint, tokenizer_for
from pipeline.models.retrieval import RetrievalModel
from pipeline.negatives.false_negatives import answer_groups
from pipeline.paths import Paths

PATHS = Paths()
KINDS = ("reference", "sibling", "same attributes", "1 field apart", "2 fields apart", "3+ fields apart")
KS = (1, 5, 10, 50)


def family_of(name: str, split: str, family_size: int, families_val: int) -> int:
    """The demo family of an image from its running number (families are written first, distractors after);
    distractors each get a family of their own."""
    number = int(name[2:])
    if split == "train" or number < families_val * family_size:
        return number // family_size
    return -1 - number


def rankings_for(model: RetrievalModel, images: pd.DataFrame, features: np.ndarray, split: str,
                 triplets_path: Path) -> list[Ranking]:
    """Each category's gallery of `split` scored against its annotated queries (generated triplets left out, so
    train and val queries are alike)."""
    in_split = (images["split"] == split).to_numpy()
    queries = QuerySet.build(images[in_split], triplets_path)
    queries.triplets = queries.triplets[queries.triplets["source"] == "annotated"].reset_index(drop=True)
    return queries.rankings(model, tokenizer_for(model.arch), torch.from_numpy(features[in_split].copy()),
                            "composed", 256)


def _percentages(ranks: torch.Tensor) -> dict[str, float]:
    return {f"R@{k}": round(value, 1) for k, value in recall_at_k(ranks, KS).items()}


def recall(rankings: list[Ranking]) -> dict[str, float]:
    """Recall@K over every category's queries, ranked as `evaluate` ranks them."""
    return _percentages(torch.cat([r.ranked().ranks for r in rankings]))


def outranking_kinds(rankings: list[Ranking], split: str, attributes: dict[str, Attributes], family_size: int,
                     families_val: int) -> tuple[Counter, Counter]:
    """Kinds of every image above its query's target, and of the top-ranked image where that is not the target."""
    every, top = Counter(), Counter()
    for r in rankings:
        scores = r.query @ r.gallery.T  # a demo category: small enough to hold whole
        for q in range(len(scores)):
            target, reference = int(r.target[q]), int(r.reference[q])
            above = torch.nonzero(scores[q] > scores[q, target]).flatten()
            above = above[torch.argsort(scores[q, above], descending=True)].tolist()
            target_name = str(r.names[target])
            target_family = family_of(target_name, split, family_size, families_val)
            for position, column in enumerate(above):
                name = str(r.names[column])
                if column == reference:
                    kind = KINDS[0]
                elif family_of(name, split, family_size, families_val) == target_family:
                    kind = KINDS[1]
                else:
                    kind = KINDS[min(len(attributes[name].changed_fields(attributes[target_name])), 3) + 2]
                every[kind] += 1
                if position == 0:
                    top[kind] += 1
    return every, top


def caption_to_image_recall(model: RetrievalModel, images: pd.DataFrame, features: np.ndarray,
                            captions: pd.DataFrame, split: str) -> dict[str, float]:
    """Each image's own caption (stage 1's text tower) as the query against its category's gallery of `split`, by
    the static features: how much of the attributes those features carry, with no composition involved."""
    caption_of = caption_lookup(captions)
    ranks = []
    for category in dict.fromkeys(images["category"]):
        rows = np.flatnonzero(((images["split"] == split) & (images["category"] == category)).to_numpy())
        texts = [caption_of[(category, name)] for name in images["name"].iloc[rows]]
        captions = text_features(model, tokenizer_for(model.arch), texts, 256)
        ranks.append(rank(captions, torch.from_numpy(features[rows]), torch.arange(len(rows)), 1).ranks)
    return _percentages(torch.cat(ranks))


def attribute_twins(negatives: pd.DataFrame, triplets: pd.DataFrame, group_of: dict[tuple[str, str], int]) -> str:
    """How many mined negatives share their triplet's target's answer group under `same_caption` (captioned exactly
    as the target, pipeline/negatives/false_negatives.py): false negatives no query text can tell apart from it."""
    target_of = dict(zip(triplets["triplet_id"], zip(triplets["category"], triplets["target"]), strict=True))
    twins = [sum(group_of[(target_of[t][0], name)] == group_of[target_of[t]] for name in names)
             for t, names in zip(negatives["triplet_id"], negatives["negatives"], strict=True)]
    mined = int(negatives["negatives"].map(len).sum())
    return (f"{sum(twins)} of {mined} mined negatives ({100 * sum(twins) / max(mined, 1):.2f}%) share the target's "
            f"caption; {sum(t > 0 for t in twins)} of {len(twins)} triplets have at least one")


def shares(counts: Counter) -> str:
    total = sum(counts.values()) or 1
    return ", ".join(f"{kind} {100 * counts[kind] / total:.1f}%" for kind in KINDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=PATHS.stage2_dir)
    args = parser.parse_args()
    synthetic = load_params().synthetic
    model = load_checkpoint(args.checkpoint)
    model.eval()
    images, features = read_features(PATHS.image_features)
    captions = pd.read_parquet(PATHS.captions)
    stage1 = load_checkpoint(PATHS.stage1_dir)
    stage1.eval()
    attributes = {name: Attributes.from_dict(json.loads(a)) for name, a in zip(captions["name"],
                                                                              captions["attributes"], strict=True)}
    for split in ("train", "val"):
        rankings = rankings_for(model, images, features, split, PATHS.triplets(split))
        every, top = outranking_kinds(rankings, split, attributes, synthetic.family_size,
                                      synthetic.families_val)
        print(f"{split}: composed queries {recall(rankings)}; stage-1 caption -> image "
              f"{caption_to_image_recall(stage1, images, features, captions, split)}")
        print(f"  images above the target ({sum(every.values())}): {shares(every)}")
        print(f"  top-1 where it is not the target ({sum(top.values())}): {shares(top)}")
    groups = answer_groups(captions, "same_caption", captions)
    group_of = dict(zip(zip(captions["category"], captions["name"]), groups, strict=True))
    triplets = pd.read_parquet(PATHS.triplets("train"))
    print("mined (data/negatives): " + attribute_twins(pd.read_parquet(PATHS.negatives), triplets, group_of))


if __name__ == "__main__":
    main()
