"""The workload the benchmarks share: a model by architecture, and a folder of JPEG files with captions, so the
same command measures the tiny demo model on a laptop and ViT-B/32 at 224 px on a GPU box.

Images are JPEGs of `--image-size` (FashionIQ's are about 300 px product photos) with smooth colour fields and a
few shapes, so they compress and decode like photographs rather than like noise. Texts have the lengths of the
pipeline's own: attribute captions of about 20 tokens (stage 1), relative captions joined as CLIP4Cir joins them
(the triplet step), and relative text plus the reference's caption (stage 2's query texts, about 35 tokens). The
text tower reads only up to a batch's longest text (pipeline/models/retrieval.py), so lengths matter.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from pipeline.config import ModelParams, Stage2Params
from pipeline.data.store import ImageStore, build_store
from pipeline.models.clip import create_model, tokenizer_for
from pipeline.models.preprocessing import image_loader, preprocessing
from pipeline.models.retrieval import RetrievalModel
from pipeline.runtime import Runtime
from pipeline.training.loop import BatchLoss
from pipeline.training.losses import composed_retrieval_loss
from pipeline.training.stage1 import caption_alignment_loss, trained_parameters
from pipeline.training.stage2 import HardNegatives, StaticBank, composed_query_loss

COLOURS = ["red", "blue", "green", "black", "white", "pink", "grey", "yellow", "purple", "orange", "brown", "beige"]
GARMENTS = ["dress", "shirt", "t-shirt", "blouse", "tank top"]
PATTERNS = ["striped", "checked", "floral", "dotted", "plain"]
SLEEVES = ["sleeveless", "short sleeves", "long sleeves"]
NECKLINES = ["a v-neck", "a round neck", "a high neck", "a square neck"]
CUTS = ["a mini cut", "a midi cut", "a maxi cut"]
CHANGES = ["is {colour}", "is darker and more {colour}", "has {sleeves}", "has no pattern", "is {pattern}",
           "is longer and has {neckline}", "is more fitted", "is {pattern} with {sleeves}"]


def default_arch(device: torch.device) -> str:
    """ViT-B/32 (the paper's) on a GPU; the demo's tiny model on a CPU, where ViT-B/32 steps take seconds."""
    return "ViT-B-32" if device.type == "cuda" else "fciq-tiny"


def model_for(arch: str, device: torch.device) -> RetrievalModel:
    return create_model(ModelParams(arch=arch), seed=0).to(device)


def _write_image(path: str, size: int, seed: int, i: int) -> None:
    rng = np.random.default_rng([seed, i])
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    low, high = rng.integers(0, 256, (2, 3))
    field = low + (high - low) * ramp[:, None, None] * ramp[None, :, None]
    image = Image.fromarray(field.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = rng.integers(0, size, 2)
        draw.ellipse([x, y, x + size // 4, y + size // 3], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    image.save(path, quality=90)


def write_images(directory: Path, n: int, size: int, seed: int = 0) -> list[str]:
    """`n` JPEG files in `directory`, written by one process per core and kept between runs (only missing files
    are written; each image depends on its index alone)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [str(directory / f"{i:06d}.jpg") for i in range(n)]
    missing = [i for i, path in enumerate(paths) if not os.path.exists(path)]
    if missing:
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(_write_image, [paths[i] for i in missing], [size] * len(missing),
                          [seed] * len(missing), missing, chunksize=256))
    return paths


def _pick(rng: np.random.Generator, words: list[str]) -> str:
    return words[rng.integers(len(words))]


def captions_for(n: int, seed: int = 0) -> list[str]:
    """Attribute captions like the demo's (about 20 tokens), from a small vocabulary so some repeat."""
    rng = np.random.default_rng(seed)
    return [f"a {_pick(rng, COLOURS)} {_pick(rng, PATTERNS)} {_pick(rng, GARMENTS)} with {_pick(rng, COLOURS)} "
            f"accents, {_pick(rng, SLEEVES)}, {_pick(rng, NECKLINES)} and {_pick(rng, CUTS)}" for _ in range(n)]


def relative_texts_for(n: int, seed: int = 0) -> list[str]:
    """Two relative captions joined as CLIP4Cir joins them ("Is red and has long sleeves")."""
    rng = np.random.default_rng(seed)

    def change() -> str:
        return _pick(rng, CHANGES).format(colour=_pick(rng, COLOURS), sleeves=_pick(rng, SLEEVES),
                                          pattern=_pick(rng, PATTERNS), neckline=_pick(rng, NECKLINES))

    return [f"{change().capitalize()} and {change()}" for _ in range(n)]


def texts_for(kind: str, n: int, seed: int = 0) -> list[str]:
    """The texts a step of `kind` encodes: relative texts (triplet), captions (stage1), or relative text plus the
    reference's caption (stage2's query texts)."""
    if kind == "triplet":
        return relative_texts_for(n, seed)
    if kind == "stage1":
        return captions_for(n, seed)
    return [f"{relative}. {caption}" for relative, caption in zip(relative_texts_for(n, seed), captions_for(n, seed))]


@functools.cache
def _tokenizer(arch: str):
    """One tokenizer per architecture (building one reads the BPE vocabulary: half a second)."""
    return tokenizer_for(arch)


def tokens_for(model: RetrievalModel, kind: str, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A step's text tokens on the device and each text's id (equal texts share one)."""
    texts = texts_for(kind, n)
    ids = {text: i for i, text in enumerate(dict.fromkeys(texts))}
    return (_tokenizer(model.arch)(texts).to(device),
            torch.tensor([ids[c] for c in texts], device=device))


def store_for(model: RetrievalModel, paths: list[str], directory: Path, workers: int, fmt: str = "raw"
              ) -> tuple[ImageStore, dict]:
    """The image store of `paths` for `model` in format `fmt` (built, with its decoding report, unless there)."""
    if not (directory / "store.json").is_file():
        report = build_store(paths, image_loader(preprocessing(model)), preprocessing(model), directory, workers,
                             fmt=fmt)
    else:
        report = {"images": len(paths), "undecodable_images": 0, "resumed_from": len(paths)}
    return ImageStore.open(directory), report


STEPS = ("triplet", "stage1", "stage2")


def images_of(kind: str, n: int) -> Callable[[np.ndarray], np.ndarray]:
    """The image rows a step of `kind` reads for a batch, in the order it asks for them (what a plain DataLoader
    must decode for it): a triplet's reference and target images, stage 1's images, none for stage 2."""
    pairs = torch.randint(0, n, (n, 2), generator=torch.Generator().manual_seed(0)).numpy()
    if kind == "triplet":
        return lambda batch: np.concatenate([pairs[batch, 0], pairs[batch, 1]])
    if kind == "stage1":
        return lambda batch: batch
    return lambda batch: batch[:0]


def step_problem(kind: str, model: RetrievalModel, pixels, n: int, runtime: Runtime
                 ) -> tuple[list[torch.nn.Parameter], BatchLoss]:
    """What one training step of `kind` trains and its loss over `n` examples, with images from `pixels` (a uint8
    tensor on the device, StoredPixels, or the plain loop's decoded batch), read at the rows `images_of` names:

    triplet  CLIP4Cir's fine-tuning step, the unit of the GPU targets (docs/gpu.md): reference and target images
             through the image tower, the text through the text tower, sum composition, in-batch InfoNCE (triplets)
    stage1   the pipeline's stage 1: image-caption InfoNCE, both towers (image-caption pairs)
    stage2   the pipeline's stage 2: text tower + combiner over static features, 16 mined and 128 static
             negatives (no image is encoded)
    """
    device = runtime.device
    generator = torch.Generator().manual_seed(1)
    tokens, caption_id = tokens_for(model, kind, 4 * n if kind == "stage2" else n, device)
    if kind == "stage1":
        return trained_parameters(model), caption_alignment_loss(model, pixels, tokens, caption_id, runtime, 0.05)
    if kind == "triplet":
        trained, rows = trained_parameters(model), images_of(kind, n)

        def triplet_loss(batch: np.ndarray, rng: np.random.Generator, epoch: int) -> torch.Tensor:
            images = model.encode_images(pixels[rows(batch)])
            reference, target = images.chunk(2)
            query = model.compose(reference, model.encode_texts(tokens[torch.from_numpy(batch).to(device)]))
            empty = torch.empty(0, dtype=torch.long, device=device)
            return composed_retrieval_loss(query, target, torch.arange(len(batch), device=device),
                                           empty.view(len(batch), 0), empty, 0.05)

        return trained, triplet_loss
    model.set_composition("combiner")
    model.to(device)
    text, combiner = model.trainable_query_side()
    for p in model.parameters():
        p.requires_grad_(any(p is q for q in text + combiner))
    features = torch.nn.functional.normalize(torch.randn(n, model.embed_dim, generator=generator), dim=-1)
    rows = torch.randint(0, n, (n, 18), generator=generator)
    bank = StaticBank(features.to(device), torch.arange(n, device=device), rows[:, 0].to(device),
                      rows[:, 1].to(device))
    variants = np.arange(4 * n).reshape(n, 4)
    params = Stage2Params()
    hard = HardNegatives(rows[:, 2:].to(device), model, tokens[variants[:, 0]], bank, None, params, runtime)
    return text + combiner, composed_query_loss(model, model, tokens, variants, bank, hard, params, runtime)
