"""Reader for FashionIQ's official on-disk layout (the demo catalogue is written in the same layout).

    <root>/captions/cap.<category>.<split>.json       [{"candidate", "target", "captions": [c1, c2]}, ...]
    <root>/image_splits/split.<category>.<split>.json [name, ...]
    <root>/images/<name>.<ext>
    <root>/tags/asin2attr.<category>.<split>.json     optional: {name: [[texture], [fabric], [shape], [part], [style]]}

Missing images are normal in FashionIQ downloads (dead product links): they are counted, the pairs that need
them are dropped, and the counts go into the stage's report. A wrong root or a whole missing split stops with one
sentence that says which layout was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from pipeline.data import IMAGE_COLUMNS, PAIR_COLUMNS
from pipeline.data.annotations import (
    FASHIONIQ_CAPTIONS,
    FASHIONIQ_IMAGE_SPLIT,
    FASHIONIQ_TAGS,
    load_annotation,
    parse_annotation,
)
from pipeline.errors import PipelineError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
LAYOUT = "captions/cap.<category>.<split>.json, image_splits/split.<category>.<split>.json and images/<name>.<ext>"


@dataclass
class FashionIQ:
    """FashionIQ (or the demo catalogue): per-category image splits; pairs carry two relative captions.

    An image may belong to several categories (about 3% of FashionIQ's do), so rows are keyed by category and
    name, never by name alone."""

    splits: ClassVar[tuple[str, ...]] = ("train", "val")  # the test split's targets are withheld, and no server
    root: Path
    categories: list[str]
    missing: dict[str, int] = field(default_factory=dict)  # report: what was dropped and why

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise PipelineError(f"data.root = '{self.root}' does not exist; expected a FashionIQ-layout dataset "
                                f"({LAYOUT}).")
        for sub in ("captions", "image_splits", "images"):
            if not (self.root / sub).is_dir():
                raise PipelineError(f"data.root = '{self.root}' has no '{sub}/' folder; expected FashionIQ's layout "
                                    f"({LAYOUT}).")

    def _load(self, kind: str, category: str, split: str) -> Any:
        """An annotation file, checked against its schema (pipeline/data/annotations.py)."""
        name = {"captions": f"cap.{category}.{split}.json", "image_splits": f"split.{category}.{split}.json"}[kind]
        path = self.root / kind / name
        data = load_annotation(path, f"FashionIQ's: {LAYOUT}", f"data.categories asks for '{category}'")
        return parse_annotation(data, FASHIONIQ_CAPTIONS if kind == "captions" else FASHIONIQ_IMAGE_SPLIT, path)

    @cached_property
    def image_paths(self) -> dict[str, Path]:
        """Every image file under images/, by name without extension."""
        return {p.stem: p for p in sorted((self.root / "images").iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}

    def images(self, split: str) -> pd.DataFrame:
        """The image split of every category: columns name, category, split, path. Missing files are dropped."""
        rows = []
        for category in self.categories:
            names = self._load("image_splits", category, split)
            absent = 0
            for name in names:
                path = self.image_paths.get(name)
                if path is None:
                    absent += 1
                    continue
                rows.append((name, category, split, str(path)))
            self.missing[f"{category}.{split}.images_missing"] = absent
        return pd.DataFrame(rows, columns=IMAGE_COLUMNS)

    def pairs(self, split: str) -> pd.DataFrame:
        """Annotated pairs (PAIR_COLUMNS; FashionIQ calls the reference "candidate"); pair_id is
        '<category>.<split>.<index in the file>', subset is empty.

        Pairs whose reference or target image is missing are dropped and counted.
        """
        rows = []
        for category in self.categories:
            dropped = 0
            for i, entry in enumerate(self._load("captions", category, split)):
                if entry.candidate not in self.image_paths or entry.target not in self.image_paths:
                    dropped += 1
                    continue
                first, second = (list(entry.captions) + [""])[:2]
                rows.append((category, split, f"{category}.{split}.{i}", entry.candidate, entry.target,
                             first.strip(), second.strip(), []))
            self.missing[f"{category}.{split}.pairs_dropped"] = dropped
        return pd.DataFrame(rows, columns=PAIR_COLUMNS)

    def tags(self, split: str) -> dict[str, list[str]]:
        """Attribute tags by image name, flattened over FashionIQ's five tag groups; empty where not shipped."""
        tags: dict[str, list[str]] = {}
        for category in self.categories:
            path = self.root / "tags" / f"asin2attr.{category}.{split}.json"
            if not path.is_file():
                continue
            listed = parse_annotation(load_annotation(path, f"FashionIQ's: {LAYOUT}", "tags were found"),
                                      FASHIONIQ_TAGS, path)
            for name, groups in listed.items():
                tags[name] = [word for group in groups for word in group if word]
        return tags

    def image_files(self) -> list[str]:
        return list(dict.fromkeys(pd.concat([self.images(split) for split in self.splits])["path"]))
