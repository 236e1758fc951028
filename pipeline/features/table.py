"""Feature tables stored as Parquet: id columns plus a fixed-size float32 list column `feature`, written by `embed`
and read by `mine`, stage 2 and the benchmarks (which need none of the encoding code in pipeline/features/encode.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io import write_parquet


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
