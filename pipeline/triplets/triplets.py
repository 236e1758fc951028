"""The `triplets` stage: the annotated pairs of every split joined with their captions, plus generated training
triplets (pipeline/triplets/generated.py, worded by an LLM with `triplets.phrasing: mllm`), as Parquet tables in the
layout of pipeline/triplets/schema.py. A catalogue with no annotated val pairs gets generated val queries instead
(held out: made from val images only), marked `source: generated` so evaluation can say so.

A triplet's query text is its relative captions followed by the reference image's sentence-level caption
(pipeline/triplets/query_text.py), so the text side knows what the reference looks like before it is asked to
change it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.captioning.captions import caption_lookup
from pipeline.config import Params
from pipeline.data import open_dataset
from pipeline.io import write_json, write_parquet
from pipeline.paths import Paths
from pipeline.triplets.generated import generated_triplets
from pipeline.triplets.query_text import triplet_query_text
from pipeline.triplets.schema import TRIPLET_COLUMNS, TRIPLET_SCHEMA


def annotated_triplets(pairs: pd.DataFrame, captions: pd.DataFrame, use_reference_prompt: bool
                       ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Annotated pairs joined with their images' captions, and how many were dropped for each reason: an image with
    no caption (it could not be decoded), or no modification text at all. A hidden target (test split, target "")
    needs no caption."""
    caption_of = caption_lookup(captions)
    reference = list(zip(pairs["category"], pairs["reference"]))
    target = list(zip(pairs["category"], pairs["target"]))
    captioned = np.array([r in caption_of and (t in caption_of or not t[1])
                          for r, t in zip(reference, target, strict=True)], dtype=bool)
    worded = ((pairs["caption1"].str.strip() != "") | (pairs["caption2"].str.strip() != "")).to_numpy(dtype=bool)
    keep = captioned & worded
    table = pairs[keep].reset_index(drop=True).copy()
    table["source"] = "annotated"
    table["reference_caption"] = [caption_of[key] for key in zip(table["category"], table["reference"])]
    table["target_caption"] = [caption_of.get(key, "") for key in zip(table["category"], table["target"])]
    table["triplet_id"] = [f"{s}-{c}-{i:06d}" for i, (s, c) in enumerate(zip(table["split"], table["category"]))]
    table["prompt"] = table["reference_caption"] if use_reference_prompt else ""
    table["query_text"] = [triplet_query_text(a, b, prompt) for a, b, prompt
                           in zip(table["caption1"], table["caption2"], table["prompt"], strict=True)]
    dropped = {"undecodable image": int((~captioned).sum()), "empty text": int((captioned & ~worded).sum())}
    return table[TRIPLET_COLUMNS], dropped


def missing_pairs(missing: dict[str, int], split: str) -> int:
    """Pairs of `split` the reader dropped because an image file is missing (its counts are per category)."""
    return sum(n for key, n in missing.items() if key.endswith(f"{split}.pairs_dropped"))


def run(params: Params, paths: Paths) -> dict:
    """Annotated triplets of every split the dataset has (train, val and CIRR's test1) plus generated training
    triplets, as `<split>.parquet`, and a report of what was made and dropped."""
    settings = params.triplets
    dataset = open_dataset(params.data, params.seed)
    captions = pd.read_parquet(paths.captions)
    tables, dropped = {}, {}
    for split in dataset.splits:
        tables[split], dropped[split] = annotated_triplets(dataset.pairs(split), captions, settings.reference_prompt)
        dropped[split] = {"missing image": missing_pairs(dataset.missing, split), **dropped[split]}
    train = tables["train"]
    generated = generated_triplets(
        captions[captions["split"] == "train"], settings.generated_per_category, settings.max_changed_fields,
        exclude=set(zip(train["reference"], train["target"], strict=True)),
        use_reference_prompt=settings.reference_prompt, rng=np.random.default_rng([params.seed, 3]))
    if "val" in tables and tables["val"].empty and params.data.source == "catalog":
        tables["val"] = generated_triplets(
            captions[captions["split"] == "val"], settings.generated_val_per_category, settings.max_changed_fields,
            exclude=set(), use_reference_prompt=settings.reference_prompt,
            rng=np.random.default_rng([params.seed, 4]), split="val")
    phrasing: dict[str, int] = {}
    if settings.phrasing == "mllm" and len(generated):
        from pipeline.triplets.phrasing import rephrase_with_llm

        model = settings.phrasing_model or params.caption.model
        generated, phrasing = rephrase_with_llm(generated, captions, params.caption, model,
                                                log_dir=paths.captions_dir)
    tables["train"] = pd.concat([train, generated], ignore_index=True)
    for split, table in tables.items():
        write_parquet(paths.triplets(split),
                      pa.Table.from_pandas(table[TRIPLET_COLUMNS], schema=TRIPLET_SCHEMA, preserve_index=False))
    report = {"train_annotated": len(train), "train_generated": len(generated),
              **{split: len(table) for split, table in tables.items() if split != "train"}, **phrasing,
              "pairs_dropped": dropped, "dataset": {k: int(v) for k, v in dataset.missing.items()}}
    write_json(paths.triplets_dir / "report.json", report)
    return report
