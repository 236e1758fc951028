"""Tiny datasets in the real benchmarks' on-disk layouts, made from the demo catalogue's images and pairs.

The real FashionIQ and CIRR images cannot be downloaded here, so these stand in for them: the annotation files
follow the official formats field for field (tests/test_cirr_reader.py and test_fashioniq_reader.py also read
the real annotation files from ../shared/realdata), and the images are demo garments. What a real download has
and the demo does not is reproduced on purpose: FashionIQ's ASIN names, JPEG product photos taller than wide,
missing files (dead product links); CIRR's pairids, six-image img_sets, relative image paths into train/<n>/,
dev/ and test1/ folders beside the annotation folder (CLIP4Cir's layout), and a test1 split with hidden targets.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = ("dress", "shirt", "toptee")


def _load(path: Path) -> object:
    return json.loads(path.read_text())


def _dump(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _as_product_photo(source: Path, target: Path) -> None:
    """A portrait JPEG (ratio 1.5, white margins above and below) like FashionIQ's product photos."""
    with Image.open(source) as image:
        w, h = image.size
        canvas = Image.new("RGB", (w, h * 3 // 2), (255, 255, 255))
        canvas.paste(image.convert("RGB"), (0, h // 4))
    canvas.save(target, format="JPEG", quality=90)


def fashioniq_download(catalogue: Path, root: Path, categories: tuple[str, ...] = CATEGORIES,
                       drop_every: int = 9) -> dict[str, int]:
    """Write `catalogue` (FashionIQ layout, demo names) as a FashionIQ download: ASIN-like names, JPEG portraits,
    attribute tags in tags/asin2attr.*, and every `drop_every`-th image file absent. Returns the absent images
    per '<category>.<split>'."""
    asin: dict[str, str] = {}
    absent: dict[str, int] = {}
    (root / "images").mkdir(parents=True)
    for category in categories:
        for split in ("train", "val"):
            names = _load(catalogue / "image_splits" / f"split.{category}.{split}.json")
            for name in names:
                asin.setdefault(name, f"B{len(asin):09d}")
            _dump(root / "image_splits" / f"split.{category}.{split}.json", [asin[n] for n in names])
            pairs = _load(catalogue / "captions" / f"cap.{category}.{split}.json")
            _dump(root / "captions" / f"cap.{category}.{split}.json",
                  [{"target": asin[p["target"]], "candidate": asin[p["candidate"]], "captions": p["captions"]}
                   for p in pairs])
            tags = _load(catalogue / "tags" / f"asin2attr.{category}.{split}.json")
            _dump(root / "tags" / f"asin2attr.{category}.{split}.json", {asin[n]: t for n, t in tags.items()})
            absent[f"{category}.{split}"] = 0
            for i, name in enumerate(names):
                if drop_every and i % drop_every == drop_every - 1:
                    absent[f"{category}.{split}"] += 1
                    continue
                _as_product_photo(catalogue / "images" / f"{name}.png", root / "images" / f"{asin[name]}.jpg")
    return absent


def cirr_download(catalogue: Path, root: Path, seed: int = 0) -> Path:
    """Write `catalogue` in CIRR's layout under `root` (CLIP4Cir's: annotations in root/cirr/, images in
    root/train/<n>/, root/dev/, root/test1/). train: every category's train pairs; val: dress and shirt val pairs;
    test1: toptee val pairs, target hidden. Each pair's img_set is its reference, its target and four other images
    of the split. Returns the annotation root (what data.root points at)."""
    rng = np.random.default_rng(seed)
    annotations = root / "cirr"
    sources = {"train": [(c, "train") for c in CATEGORIES], "val": [("dress", "val"), ("shirt", "val")],
               "test1": [("toptee", "val")]}
    folders = {"train": "train/0", "val": "dev", "test1": "test1"}
    prefixes = {"train": "train", "val": "dev", "test1": "test1"}
    pair_id = 0
    for split, parts in sources.items():
        relative: dict[str, str] = {}
        renamed: dict[tuple[str, str], str] = {}
        pairs: list[dict] = []
        for category, source_split in parts:
            for name in _load(catalogue / "image_splits" / f"split.{category}.{source_split}.json"):
                new = f"{prefixes[split]}-{len(relative)}-0-img{len(relative) % 2}"
                renamed[(category, name)] = new
                relative[new] = f"./{folders[split]}/{new}.png"
                (root / folders[split]).mkdir(parents=True, exist_ok=True)
                (root / folders[split] / f"{new}.png").write_bytes(
                    (catalogue / "images" / f"{name}.png").read_bytes())
            pairs += [(category, p) for p in _load(catalogue / "captions" / f"cap.{category}.{source_split}.json")]
        names = list(relative)
        entries = []
        for category, pair in pairs:
            reference, target = renamed[(category, pair["candidate"])], renamed[(category, pair["target"])]
            others = [n for n in names if n not in (reference, target)]
            members = [reference, target, *(others[i] for i in rng.choice(len(others), 4, replace=False))]
            members = [members[i] for i in rng.permutation(6)]
            entry = {"pairid": pair_id, "reference": reference, "caption": pair["captions"][0],
                     "img_set": {"id": pair_id, "members": members, "reference_rank": members.index(reference)}}
            if split != "test1":
                entry.update({"target_hard": target, "target_soft": {target: 1.0},
                              "img_set": {**entry["img_set"], "target_rank": members.index(target)}})
            entries.append(entry)
            pair_id += 1
        _dump(annotations / "captions" / f"cap.rc2.{split}.json", entries)
        _dump(annotations / "image_splits" / f"split.rc2.{split}.json", relative)
    return annotations
