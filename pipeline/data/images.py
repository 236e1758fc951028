"""Decode images once per stage into one uint8 tensor; corrupt files are skipped and reported, never fatal."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import Image
from tqdm import tqdm


def _decode(path: str, loader: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor | None:
    try:
        with Image.open(path) as image:
            return loader(image.convert("RGB"))
    except Exception:  # Pillow raises many types for broken files; all mean "skip this image"
        return None


def decode_images(
    paths: Sequence[str], loader: Callable[[Image.Image], torch.Tensor], desc: str = "decode",
) -> tuple[torch.Tensor, list[int]]:
    """uint8 [N_ok, 3, H, W] for the decodable paths, and the indices of those that failed."""
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(tqdm(pool.map(lambda p: _decode(p, loader), paths), total=len(paths), desc=desc, unit="img",
                            mininterval=2))
    failed = [i for i, tensor in enumerate(decoded) if tensor is None]
    ok = [tensor for tensor in decoded if tensor is not None]
    if not ok:
        return torch.empty(0, 3, 0, 0, dtype=torch.uint8), failed
    return torch.stack(ok), failed
