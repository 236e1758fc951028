"""The `embed` stage: static features of every image and query text from the frozen stage-1 model.

These are the features of the image tower that stage 2 keeps frozen, so they serve twice: FAISS mines hard
negatives with them, and stage 2 uses them as its static gallery bank to scale the number of negatives. With
`stage1.epochs: 0` the stage-1 checkpoint is the base model itself (zero-shot static features).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.config import EmbedParams
from pipeline.data.images import decode_images
from pipeline.device import compute_device
from pipeline.features import image_features, text_features, write_features
from pipeline.io import write_json
from pipeline.models import image_loader, load_checkpoint, tokenizer_for


def embed_stage(params: EmbedParams, checkpoint_dir: Path, captions_path: Path, triplets_dir: Path, out_dir: Path
                ) -> dict[str, int]:
    model = load_checkpoint(checkpoint_dir, compute_device()).eval()
    images = pd.read_parquet(captions_path)
    pixels, failed = decode_images(images["path"].tolist(), image_loader(model))
    images = images.drop(index=images.index[failed]).reset_index(drop=True)
    write_features(out_dir / "images.parquet", images[["name", "category", "split"]],
                   image_features(model, pixels, params.batch_size).numpy())
    triplets = pd.concat([pd.read_parquet(triplets_dir / f"{s}.parquet") for s in ("train", "val")],
                         ignore_index=True)
    texts = text_features(model, tokenizer_for(model.arch), triplets["query_text"].tolist(), params.batch_size)
    write_features(out_dir / "queries.parquet", triplets[["triplet_id", "split"]], texts.numpy())
    report = {"images": len(images), "undecodable_images": len(failed), "queries": len(triplets)}
    write_json(out_dir / "report.json", report)
    return report
