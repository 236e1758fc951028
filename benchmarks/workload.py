"""The workload the benchmarks share: a model by architecture, and a folder of JPEG files with captions, so the
same command measures the tiny demo model on a laptop and ViT-B/32 at 224 px on a GPU box.

Images are JPEGs of `--image-size` (FashionIQ's are about 300 px product photos) with smooth colour fields and a
few shapes, so they compress and decode like photographs rather than like noise.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from pipeline.config import ModelParams, NegativesParams, Stage2Params
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


def default_arch(device: torch.device) -> str:
    """ViT-B/32 (the paper's) on a GPU; the demo's tiny model on a CPU, where ViT-B/32 steps take seconds."""
    return "ViT-B-32" if device.type == "cuda" else "fciq-tiny"


def model_for(arch: str, device: torch.device) -> RetrievalModel:
    return create_model(ModelParams(arch=arch), seed=0).to(device)


def write_images(directory: Path, n: int, size: int, seed: int = 0) -> list[str]:
    """`n` JPEG files in `directory` (kept between runs: they are only written when missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    for i in range(n):
        path = directory / f"{i:06d}.jpg"
        paths.append(str(path))
        if path.exists():
            continue
        low, high = rng.integers(0, 256, (2, 3))
        field = low + (high - low) * ramp[:, None, None] * ramp[None, :, None]
        image = Image.fromarray(field.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x, y = rng.integers(0, size, 2)
            draw.ellipse([x, y, x + size // 4, y + size // 3], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        image.save(path, quality=90)
    return paths


def captions_for(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"a {COLOURS[rng.integers(len(COLOURS))]} {GARMENTS[rng.integers(len(GARMENTS))]}" for _ in range(n)]


def tokens_for(model: RetrievalModel, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption tokens on the device and each caption's id (equal captions share one)."""
    captions = captions_for(n)
    ids = {caption: i for i, caption in enumerate(dict.fromkeys(captions))}
    return (tokenizer_for(model.arch)(captions).to(device),
            torch.tensor([ids[c] for c in captions], device=device))


def store_for(model: RetrievalModel, paths: list[str], directory: Path, workers: int) -> tuple[ImageStore, dict]:
    """The decoded-image store of `paths` for `model` (built, with its decoding report, unless already there)."""
    if not (directory / "store.json").is_file():
        report = build_store(paths, image_loader(preprocessing(model)), preprocessing(model), directory, workers)
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

    triplet  CLIP4Cir's fine-tuning step, the unit of issue 5's table: reference and target images through the
             image tower, the text through the text tower, sum composition, in-batch InfoNCE (triplets)
    stage1   the pipeline's stage 1: image-caption InfoNCE, both towers (image-caption pairs)
    stage2   the pipeline's stage 2: text tower + combiner over static features, 16 mined and 128 static
             negatives (no image is encoded)
    """
    device = runtime.device
    generator = torch.Generator().manual_seed(1)
    tokens, caption_id = tokens_for(model, 4 * n if kind == "stage2" else n, device)
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
    hard = HardNegatives(rows[:, 2:].to(device), model, tokens[variants[:, 0]], bank, NegativesParams(k=16), params, 0,
                         runtime)
    return text + combiner, composed_query_loss(model, model, tokens, variants, bank, hard, params, runtime)
