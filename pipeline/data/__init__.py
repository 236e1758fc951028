"""Benchmark datasets in their official layouts, behind one small interface the stages read.

Both readers give the same tables, so everything downstream (captioning, triplets, training, evaluation) is
dataset-agnostic; only evaluation and stage 2's validation ask which protocol to score with (`data.source`).

    images(split) -> name, category, split, path        (one row per image of the split; missing files dropped)
    pairs(split)  -> category, split, pair_id, reference, target, caption1, caption2, subset
    tags(split)   -> {name: [attribute words]}          (empty where the dataset ships none)
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
PAIR_COLUMNS = ["category", "split", "pair_id", "reference", "target", "caption1", "caption2", "subset"]


class Dataset(Protocol):
    splits: tuple[str, ...]
    missing: dict[str, int]

    def images(self, split: str) -> pd.DataFrame: ...

    def pairs(self, split: str) -> pd.DataFrame: ...

    def tags(self, split: str) -> dict[str, list[str]]: ...


def open_dataset(data: DataParams) -> Dataset:
    """The reader `data.source` names, on `data.root` (checked for the expected layout)."""
    if data.source == "cirr":
        from pipeline.data.cirr import CIRR

        return CIRR(Path(data.root))
    from pipeline.data.fashioniq import FashionIQ

    return FashionIQ(Path(data.root), list(data.categories))
