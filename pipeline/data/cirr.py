"""Reader for CIRR's official annotation layout (rc2).

    <root>/captions/cap.rc2.<split>.json        [{"pairid", "reference", "target_hard", "caption",
                                                   "img_set": {"members": [6 names]}}, ...]   (test1: no target)
    <root>/image_splits/split.rc2.<split>.json  {name: "./<relative path>.png"}

Splits are train, val and test1. Image paths in the split files are relative; they are looked up under
`data.root` and then under its parent, so both a flat download (`<root>/dev/...`) and CLIP4Cir's layout
(`cirr_dataset/cirr/captions`, images in `cirr_dataset/dev/...`, data.root = `cirr_dataset/cirr`) work.

CIRR has no garment categories: every row has category 'cirr', so per-category code treats it as one group. It
ships no attribute tags. Missing images are counted and the pairs that need them dropped (for test1, only a
missing reference drops a pair: its target is hidden).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from pipeline.data import IMAGE_COLUMNS, PAIR_COLUMNS
from pipeline.data.annotations import CIRR_CAPTIONS, CIRR_IMAGE_SPLIT, load_annotation, parse_annotation
from pipeline.errors import PipelineError

CATEGORY = "cirr"
TEST_SPLIT = "test1"
LAYOUT = "captions/cap.rc2.<split>.json and image_splits/split.rc2.<split>.json, with the image paths they list"


@dataclass
class CIRR:
    splits: ClassVar[tuple[str, ...]] = ("train", "val", TEST_SPLIT)
    root: Path
    missing: dict[str, int] = field(default_factory=dict)
    _paths: dict[str, dict[str, Path]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise PipelineError(f"data.root = '{self.root}' does not exist; expected CIRR's layout ({LAYOUT}).")
        for sub in ("captions", "image_splits"):
            if not (self.root / sub).is_dir():
                raise PipelineError(f"data.root = '{self.root}' has no '{sub}/' folder; expected CIRR's layout "
                                    f"({LAYOUT}).")

    def _load(self, kind: str, split: str) -> Any:
        """An annotation file, checked against its schema (pipeline/data/annotations.py)."""
        name = {"captions": f"cap.rc2.{split}.json", "image_splits": f"split.rc2.{split}.json"}[kind]
        path = self.root / kind / name
        data = load_annotation(path, f"CIRR's: {LAYOUT}", f"the pipeline reads CIRR's {split} split")
        return parse_annotation(data, CIRR_CAPTIONS if kind == "captions" else CIRR_IMAGE_SPLIT, path)

    def _image_paths(self, split: str) -> dict[str, Path]:
        """Existing image files of `split` by name (cached: pairs() and images() both need them)."""
        if split not in self._paths:
            listed = self._load("image_splits", split)
            found: dict[str, Path] = {}
            for name, relative in listed.items():
                for base in (self.root, self.root.parent):
                    if (base / relative).is_file():
                        found[name] = base / relative
                        break
            self.missing[f"{split}.images_missing"] = len(listed) - len(found)
            self._paths[split] = found
        return self._paths[split]

    def images(self, split: str) -> pd.DataFrame:
        rows = [(name, CATEGORY, split, str(path)) for name, path in self._image_paths(split).items()]
        return pd.DataFrame(rows, columns=IMAGE_COLUMNS)

    def pairs(self, split: str) -> pd.DataFrame:
        """Annotated pairs (PAIR_COLUMNS): pair_id is CIRR's pairid, caption2 is empty (CIRR has one caption), subset
        is the pair's img_set members (the reference included, as published; evaluation removes it)."""
        path = self.root / "captions" / f"cap.rc2.{split}.json"
        present = self._image_paths(split)
        rows, dropped = [], 0
        for i, entry in enumerate(self._load("captions", split)):
            if split != TEST_SPLIT and entry.target_hard is None:
                raise PipelineError(f"{path} entry {i}: field 'target_hard' is missing; every pair outside "
                                    f"{TEST_SPLIT} names its target.")
            target = entry.target_hard if split != TEST_SPLIT else ""
            if entry.reference not in present or (target and target not in present):
                dropped += 1
                continue
            rows.append((CATEGORY, split, str(entry.pairid), entry.reference, target, entry.caption.strip(), "",
                         list(entry.img_set.members)))
        self.missing[f"{split}.pairs_dropped"] = dropped
        return pd.DataFrame(rows, columns=PAIR_COLUMNS)

    def tags(self, split: str) -> dict[str, list[str]]:
        """CIRR ships no attribute tags."""
        return {}

    def image_files(self) -> list[str]:
        return list(dict.fromkeys(pd.concat([self.images(split) for split in self.splits])["path"]))
