"""How an image is prepared for a model before normalisation: the architecture's own resize and crop, after
CLIP4Cir's targetpad when asked, as uint8 (the image store keeps exactly this)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import open_clip
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as TF

if TYPE_CHECKING:
    from pipeline.models.retrieval import RetrievalModel


class TargetPad:
    """CLIP4Cir's targetpad: pad an image whose aspect ratio is at least `target_ratio` with black, evenly on both
    sides, until its ratio is `target_ratio` (not to a square); less elongated images pass unchanged."""

    def __init__(self, target_ratio: float):
        self.target_ratio = target_ratio

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if max(w, h) / min(w, h) < self.target_ratio:
            return image
        scaled = max(w, h) / self.target_ratio
        horizontal, vertical = max(int((scaled - w) / 2), 0), max(int((scaled - h) / 2), 0)
        return TF.pad(image, [horizontal, vertical, horizontal, vertical], fill=0, padding_mode="constant")

    def __repr__(self) -> str:
        return f"TargetPad(target_ratio={self.target_ratio})"


Preprocessing = dict  # open_clip's preprocess_cfg (size, mean, std, interpolation, resize_mode) + target_ratio


def preprocessing(model: RetrievalModel) -> Preprocessing:
    """What `model` expects done to an image before normalisation, as plain JSON values (so a stored copy compares
    equal): the architecture's preprocess_cfg plus CLIP4Cir's targetpad ratio (None = off)."""
    return json.loads(json.dumps({**model.clip.visual.preprocess_cfg, "target_ratio": model.target_ratio}))


def image_loader(preprocess: Preprocessing) -> transforms.Compose:
    """The architecture's own preprocessing up to (not including) normalisation, producing uint8 tensors, after
    CLIP4Cir's targetpad when `preprocess` asks for it. An MLLM tower's processor may resize the shortest edge to
    more than the crop (`resize_shortest`), which open_clip's transforms have no form for."""
    size = preprocess["size"]
    full = open_clip.image_transform(size if isinstance(size, int) else tuple(size), is_train=False,
                                     mean=tuple(preprocess["mean"]), std=tuple(preprocess["std"]),
                                     resize_mode=preprocess["resize_mode"], interpolation=preprocess["interpolation"])
    steps = [t for t in full.transforms if not isinstance(t, transforms.Normalize)]
    if preprocess.get("resize_shortest"):
        mode = transforms.InterpolationMode(preprocess["interpolation"])
        steps = [transforms.Resize(preprocess["resize_shortest"], interpolation=mode),
                 transforms.CenterCrop(size), *steps[2:]]  # open_clip's 'shortest': Resize(size), CenterCrop, ...
    pad = [TargetPad(preprocess["target_ratio"])] if preprocess.get("target_ratio") else []
    return transforms.Compose([*pad, *steps, transforms.Lambda(_to_uint8)])


def _to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels * 255).round().to(torch.uint8)
