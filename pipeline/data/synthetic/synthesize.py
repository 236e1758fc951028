"""The demo catalogue: procedurally rendered garments written in FashionIQ's on-disk format.

Images come in families: a base garment and a few mutations of it, each differing from the base in one to three
attributes. Every reference -> target pair is (base, mutation) in a random direction, so the other mutations of
the family are natural hard distractors that share most attributes with the target. The validation gallery
also holds unrelated distractor garments, so that random recall is low, as on FashionIQ.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.captioning.attributes import (
    CATEGORIES,
    COLORS,
    LENGTHS_BY_CATEGORY,
    NECKLINES,
    PATTERNS,
    SLEEVES,
    Attributes,
)
from pipeline.config import Params, SyntheticParams
from pipeline.data.synthetic.annotate import relative_captions
from pipeline.data.synthetic.render import Nuisance, render
from pipeline.io import atomic_path
from pipeline.paths import Paths

SPLITS = ("train", "val")
_CHANGE_COUNT_PROBS = (0.45, 0.35, 0.20)  # one, two or three attributes differ within a pair


@dataclass(frozen=True)
class SyntheticImage:
    name: str
    category: str
    split: str
    attributes: Attributes
    nuisance: Nuisance


@dataclass(frozen=True)
class SyntheticPair:
    category: str
    split: str
    reference: str
    target: str
    captions: list[str]


def random_attributes(category: str, rng: np.random.Generator) -> Attributes:
    color = COLORS[int(rng.integers(len(COLORS)))]
    pattern = "solid" if rng.random() < 0.35 else PATTERNS[1 + int(rng.integers(len(PATTERNS) - 1))]
    colors = (color,) if pattern == "solid" else (color, _other_color(rng, color))
    lengths = LENGTHS_BY_CATEGORY[category]
    return Attributes(
        category=category, colors=colors, pattern=pattern,
        sleeves=SLEEVES[int(rng.integers(len(SLEEVES)))], neckline=NECKLINES[int(rng.integers(len(NECKLINES)))],
        length=lengths[int(rng.integers(len(lengths)))],
    )


def _other_color(rng: np.random.Generator, *exclude: str | None) -> str:
    choices = [c for c in COLORS if c not in exclude]
    return choices[int(rng.integers(len(choices)))]


def _other(rng: np.random.Generator, values: tuple[str, ...], current: str | None) -> str:
    choices = [v for v in values if v != current]
    return choices[int(rng.integers(len(choices)))]


def mutate(base: Attributes, rng: np.random.Generator) -> Attributes:
    """A garment that differs from `base` in one to three attributes."""
    n_changes = 1 + int(rng.choice(len(_CHANGE_COUNT_PROBS), p=_CHANGE_COUNT_PROBS))
    fields = ["color", "pattern", "sleeves", "neckline", "length"] + (["accent"] if base.accent else [])
    chosen = [fields[i] for i in rng.permutation(len(fields))[:n_changes]]
    color, accent, pattern = base.color, base.accent, base.pattern
    if "pattern" in chosen:
        pattern = _other(rng, PATTERNS, pattern)
        if pattern == "solid":
            accent = None
        elif accent is None:
            accent = _other_color(rng, color)
    if "color" in chosen:
        color = _other_color(rng, color, accent)
    if "accent" in chosen and pattern != "solid":
        accent = _other_color(rng, accent, color)
    return Attributes(
        category=base.category, colors=(color,) if accent is None else (color, accent), pattern=pattern,
        sleeves=_other(rng, SLEEVES, base.sleeves) if "sleeves" in chosen else base.sleeves,
        neckline=_other(rng, NECKLINES, base.neckline) if "neckline" in chosen else base.neckline,
        length=_other(rng, LENGTHS_BY_CATEGORY[base.category], base.length) if "length" in chosen else base.length,
    )


def generate(params: SyntheticParams, seed: int) -> tuple[list[SyntheticImage], list[SyntheticPair]]:
    """Sample every image's attributes and nuisance and every pair's captions; deterministic for a seed."""
    images: list[SyntheticImage] = []
    pairs: list[SyntheticPair] = []
    for category in CATEGORIES:
        for s_index, split in enumerate(SPLITS):
            rng = np.random.default_rng([seed, CATEGORIES.index(category), s_index])
            prefix = f"{category[0].upper()}{split[0].upper()}"
            n_families = params.families_train if split == "train" else params.families_val
            counter = 0

            def add(attributes: Attributes) -> str:
                nonlocal counter
                name = f"{prefix}{counter:06d}"
                counter += 1
                images.append(SyntheticImage(name, category, split, attributes, Nuisance.sample(rng)))
                return name

            for _ in range(n_families):
                base_attrs = random_attributes(category, rng)
                base = add(base_attrs)
                family = {base_attrs}
                for _ in range(params.family_size - 1):
                    mutant_attrs = mutate(base_attrs, rng)
                    while mutant_attrs in family:  # attribute twins would be indistinguishable targets
                        mutant_attrs = mutate(base_attrs, rng)
                    family.add(mutant_attrs)
                    mutant = add(mutant_attrs)
                    if rng.random() < 0.5:
                        ref, tgt, ref_a, tgt_a = base, mutant, base_attrs, mutant_attrs
                    else:
                        ref, tgt, ref_a, tgt_a = mutant, base, mutant_attrs, base_attrs
                    pairs.append(SyntheticPair(category, split, ref, tgt, relative_captions(ref_a, tgt_a, rng)))
            if split == "val":
                for _ in range(params.distractors_val):
                    add(random_attributes(category, rng))
    return images, pairs


def fashioniq_tags(attributes: Attributes) -> list[list[str]]:
    """FashionIQ's tag layout: five lists (texture, fabric, shape, part, style) of attribute words."""
    texture = [attributes.color or "", attributes.pattern or ""] + ([attributes.accent] if attributes.accent else [])
    return [texture, [], [attributes.length or ""], [attributes.sleeves or "", attributes.neckline or ""], []]


def _render_to_file(job: tuple[SyntheticImage, int, str]) -> None:
    image, size, path = job
    render(image.attributes, image.nuisance, size).save(path, format="PNG", optimize=False)


def write_catalogue(root: str | Path, params: SyntheticParams, seed: int, workers: int = 2) -> dict[str, int]:
    """Render and write the whole catalogue to `root` (replaced atomically); returns counts for the report."""
    images, pairs = generate(params, seed)
    with atomic_path(root) as tmp:
        for sub in ("images", "captions", "image_splits", "tags"):
            (tmp / sub).mkdir(parents=True)
        jobs = [(image, params.image_size, str(tmp / "images" / f"{image.name}.png")) for image in images]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in tqdm(pool.map(_render_to_file, jobs, chunksize=64), total=len(jobs), desc="render",
                          unit="img", mininterval=2):
                pass
        shuffle = np.random.default_rng([seed, 99])
        for category in CATEGORIES:
            for split in SPLITS:
                names = [im.name for im in images if im.category == category and im.split == split]
                names = [names[i] for i in shuffle.permutation(len(names))]
                _dump(tmp / "image_splits" / f"split.{category}.{split}.json", names)
                split_pairs = [p for p in pairs if p.category == category and p.split == split]
                _dump(tmp / "captions" / f"cap.{category}.{split}.json",
                      [{"target": p.target, "candidate": p.reference, "captions": p.captions} for p in split_pairs])
                _dump(tmp / "tags" / f"asin2attr.{category}.{split}.json",
                      {im.name: fashioniq_tags(im.attributes) for im in images
                       if im.category == category and im.split == split})
    return {"images": len(images), "pairs": len(pairs)}


def _dump(path: Path, data: object) -> None:
    path.write_text(json.dumps(data))


def run(params: Params, paths: Paths) -> dict[str, int]:
    """The `synthesize` stage."""
    return write_catalogue(paths.synthetic, params.synthetic, params.seed)
