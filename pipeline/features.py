"""Batched feature extraction (on the model's device, returned on the CPU), and feature tables stored as Parquet
(id columns + a fixed-size float32 list)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from pipeline.io import write_parquet
from pipeline.models import RetrievalModel


@torch.no_grad()
def image_features(model: RetrievalModel, pixels: torch.Tensor, batch_size: int, desc: str = "embed images"
                   ) -> torch.Tensor:
    model.eval()
    chunks = [model.encode_images(pixels[i:i + batch_size]).cpu()
              for i in tqdm(range(0, len(pixels), batch_size), desc=desc, unit="batch", mininterval=2)]
    return torch.cat(chunks) if chunks else torch.empty(0, model.embed_dim)


@torch.no_grad()
def text_features(model: RetrievalModel, tokenizer, texts: Sequence[str], batch_size: int,
                  desc: str = "embed texts") -> torch.Tensor:
    model.eval()
    chunks = [model.encode_texts(tokenizer(list(texts[i:i + batch_size]))).cpu()
              for i in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", mininterval=2)]
    return torch.cat(chunks) if chunks else torch.empty(0, model.embed_dim)


def write_features(path: str | Path, ids: pd.DataFrame, features: np.ndarray) -> None:
    features = np.ascontiguousarray(features, dtype=np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), features.shape[1])
    table = pa.Table.from_pandas(ids.reset_index(drop=True), preserve_index=False).append_column("feature", column)
    write_parquet(path, table)


def read_features(path: str | Path) -> tuple[pd.DataFrame, np.ndarray]:
    table = pq.read_table(path)
    column = table.column("feature").combine_chunks()
    features = column.flatten().to_numpy().reshape(len(table), column.type.list_size)
    return table.drop(["feature"]).to_pandas(), features
