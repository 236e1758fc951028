"""The `embed` stage: static features of every image and query text from the frozen stage-1 model.

These are the features of the image tower that stage 2 keeps frozen, so they serve twice: FAISS mines hard
negatives with them, and stage 2 uses them as its static gallery bank to scale the number of negatives. With
`stage1.epochs: 0` the stage-1 checkpoint is the base model itself (zero-shot static features). Images come from
the decoded-image store, each file encoded once.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.config import EmbedParams
from pipeline.data.store import ImageStore
from pipeline.device import Runtime
from pipeline.feature_table import write_features
from pipeline.features import stored_image_features, text_features
from pipeline.io import write_json
from pipeline.models import load_checkpoint, preprocessing, tokenizer_for


def embed_stage(params: EmbedParams, runtime: Runtime, checkpoint_dir: Path, captions_path: Path, store_dir: Path,
                triplets_dir: Path, out_dir: Path) -> dict[str, int]:
    model = load_checkpoint(checkpoint_dir)
    runtime.prepare(model)
    store = ImageStore.open(store_dir)
    store.check(preprocessing(model), f"the checkpoint in {checkpoint_dir}")
    images, rows, lacking = store.select(pd.read_parquet(captions_path))
    write_features(out_dir / "images.parquet", images[["name", "category", "split"]],
                   stored_image_features(model, store, rows, params.batch_size, runtime).numpy())
    triplets = pd.concat([pd.read_parquet(triplets_dir / f"{s}.parquet") for s in ("train", "val")],
                         ignore_index=True)
    texts = text_features(model, tokenizer_for(model.arch), triplets["query_text"].tolist(), params.batch_size,
                          runtime)
    write_features(out_dir / "queries.parquet", triplets[["triplet_id", "split"]], texts.numpy())
    report = {"images": len(images), "undecodable_images": lacking, "queries": len(triplets)}
    write_json(out_dir / "report.json", report)
    return report
