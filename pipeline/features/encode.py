"""Batched feature extraction: on the model's device, in the runtime's precision, returned on the CPU (stored as
Parquet tables by pipeline/features/table.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from pipeline.data.store import ImageStore, StoredPixels
from pipeline.models.retrieval import RetrievalModel
from pipeline.runtime import Runtime

Pixels = torch.Tensor | StoredPixels


@torch.no_grad()
def image_features(model: RetrievalModel, pixels: Pixels, batch_size: int, runtime: Runtime = Runtime(),
                   desc: str = "embed images") -> torch.Tensor:
    """Features of every row of `pixels` (a uint8 tensor or StoredPixels), kept on the device until the end so the
    loop never waits for a copy back."""
    model.eval()
    chunks = []
    for start in tqdm(range(0, len(pixels), batch_size), desc=desc, unit="batch", mininterval=2):
        with runtime.autocast():
            chunks.append(model.encode_images(pixels[np.arange(start, min(start + batch_size, len(pixels)))]))
    return torch.cat(chunks).cpu() if chunks else torch.empty(0, model.embed_dim)


def stored_image_features(model: RetrievalModel, store: ImageStore, rows: np.ndarray, batch_size: int,
                          runtime: Runtime = Runtime(), desc: str = "embed images") -> torch.Tensor:
    """Features of the store's `rows`, each distinct image encoded once (FashionIQ lists 3% of its images under
    two categories)."""
    distinct, inverse = np.unique(rows, return_inverse=True)
    features = image_features(model, StoredPixels(store, distinct, runtime.device), batch_size, runtime, desc)
    return features[torch.from_numpy(inverse.reshape(-1))]


@torch.no_grad()
def text_features(model: RetrievalModel, tokenizer, texts: Sequence[str], batch_size: int,
                  runtime: Runtime = Runtime(), desc: str = "embed texts") -> torch.Tensor:
    """Features of `texts`, in their order. They are encoded shortest first, so that each batch's texts are of
    about one length and the text tower's trim to the batch's longest (RetrievalModel.encode_texts) cuts close."""
    model.eval()
    if not len(texts):
        return torch.empty(0, model.embed_dim)
    tokens = tokenizer(list(texts))
    order = torch.argsort(model.token_counts(tokens), stable=True)
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", mininterval=2):
        with runtime.autocast():
            chunks.append(model.encode_texts(tokens[order[start:start + batch_size]]))
    features = torch.empty(len(texts), model.embed_dim)
    features[order] = torch.cat(chunks).cpu()
    return features
