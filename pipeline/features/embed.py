"""The `embed` stage: static features of every image and query text from the frozen stage-1 model.

These are the features of the image tower that stage 2 keeps frozen, so they serve twice: FAISS mines hard
negatives with them, and stage 2 uses them as its static gallery bank to scale the number of negatives. With
`stage1.epochs: 0` the stage-1 checkpoint is the base model itself (zero-shot static features). Images come from
the decoded-image store, each file encoded once.
"""

from __future__ import annotations

import pandas as pd

from pipeline.config import Params
from pipeline.data.store import ImageStore
from pipeline.features.encode import stored_image_features, text_features
from pipeline.features.table import write_features
from pipeline.io import write_json
from pipeline.models.clip import load_checkpoint, tokenizer_for
from pipeline.models.preprocessing import preprocessing
from pipeline.paths import Paths
from pipeline.runtime import Runtime


def run(params: Params, paths: Paths) -> dict[str, int]:
    runtime = Runtime.start(params.compute)
    batch_size = params.embed.batch_size
    model = load_checkpoint(paths.stage1_dir)
    runtime.prepare(model)
    store = ImageStore.open(paths.image_store)
    store.check(preprocessing(model), f"the checkpoint in {paths.stage1_dir}")
    images, rows, lacking = store.select(pd.read_parquet(paths.captions))
    write_features(paths.image_features, images[["name", "category", "split"]],
                   stored_image_features(model, store, rows, batch_size, runtime).numpy())
    triplets = pd.concat([pd.read_parquet(paths.triplets(split)) for split in ("train", "val")], ignore_index=True)
    texts = text_features(model, tokenizer_for(model.arch), triplets["query_text"].tolist(), batch_size, runtime)
    write_features(paths.query_features, triplets[["triplet_id", "split"]], texts.numpy())
    report = {"images": len(images), "undecodable_images": lacking, "queries": len(triplets)}
    write_json(paths.embeddings_dir / "report.json", report)
    return report
