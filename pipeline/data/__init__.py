"""Datasets (the benchmarks in their official layouts, or a shop's own catalogue) behind one small interface.

Every reader gives the same tables, so everything downstream (captioning, triplets, training, evaluation) is
dataset-agnostic; only evaluation and stage 2's validation ask which protocol to score with (`data.source`).

    images(split) -> name, category, split, path        (one row per image of the split; missing files dropped)
    pairs(split)  -> category, split, pair_id, reference, target, caption1, caption2, subset
    tags(split)   -> {name: [attribute words]}          (empty where the dataset ships none; a catalogue's are named,
                                                        "colour: black", and its title is "title: ...")
    image_files() -> every image file of every split, once (what the image store decodes)
    missing       -> what was dropped and why, for the stage reports
    splits        -> the splits the pipeline reads: train, val and, where a public server scores hidden
                     targets (CIRR's test1), that test split (its pairs have target "")
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import pandas as pd

from pipeline.config import DataParams

IMAGE_COLUMNS = ["name", "category", "split", "path"]
TITLE_TAG = "title: "  # a tag that is a product's title (a catalogue's), kept as free text, not as an attribute
PAIR_COLUMNS = ["category", "split", "pair_id", "reference", "target", "caption1", "caption2", "subset"]


class Dataset(Protocol):
    splits: tuple[str, ...]
    missing: dict[str, int]

    def images(self, split: str) -> pd.DataFrame: ...

    def pairs(self, split: str) -> pd.DataFrame: ...

    def tags(self, split: str) -> dict[str, list[str]]: ...

    def image_files(self) -> list[str]:
        """Every image file of every split, once, in an order that does not depend on the splits."""


def open_dataset(data: DataParams, seed: int = 0) -> Dataset:
    """The reader `data.source` names, on `data.root` (checked for the expected layout); `seed` splits a catalogue
    that has no split column (which image files there are does not depend on it)."""
    if data.source == "cirr":
        from pipeline.data.cirr import CIRR

        return CIRR(Path(data.root))
    if data.source == "catalog":
        from pipeline.data.catalog import Catalog

        return Catalog(Path(data.root), data.catalog, list(data.categories), seed)
    from pipeline.data.fashioniq import FashionIQ

    return FashionIQ(Path(data.root), list(data.categories))
