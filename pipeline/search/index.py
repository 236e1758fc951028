"""The `index` stage: every gallery image's feature from the trained (stage-2) model in a vector index, which
`fashion-cir search` and `fashion-cir serve` answer queries from.

    index/gallery.faiss    the FAISS index (`index.kind`; backend faiss); its row i is row i of gallery.parquet
    index/gallery.parquet  name, category, split, path and caption of each image, one row per image file, and a
                           catalogue's attribute columns (what search filters on besides the category)
    index/index.json       its `version` (a digest of the model, the gallery table, the features and the index
                           settings: what a running `fashion-cir serve` watches to follow a new index), which model
                           made it (the checkpoint's sha256, its image encoder), the backend, the kind and its
                           settings, whether query texts end with the reference's caption
                           (triplets.reference_prompt), as in training; for backend milvus, which collection holds
                           this version and how its fields are laid out (pipeline/search/milvus_index.py)

The gallery is `gallery.root` (pipeline/search/gallery.py): by default the training data, every image of it (train
and val), since a shop searches its whole catalogue; or a live catalogue folder, whose new images are the only ones
captioned and encoded on the next run.

A server follows the index without a restart (pipeline/search/live.py): it loads the new version beside the one it
serves and swaps. With FAISS the new version is a new file; with Milvus the stage syncs the collection the served
version does not use (two slots, `<collection>_a` and `<collection>_b`, each synced by its own diff), so a search
never sees a collection half synced.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.config import Params
from pipeline.io import atomic_path, write_parquet
from pipeline.models.clip import load_checkpoint
from pipeline.paths import Paths
from pipeline.runtime import Runtime
from pipeline.search.faiss_index import build_index
from pipeline.search.feature_cache import FeatureCache
from pipeline.search.gallery import feature_signature, filterable_columns, gallery_features, gallery_table

VERSION_LENGTH = 12


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as content:
        for block in iter(lambda: content.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_digest(checkpoint_dir: Path) -> str:
    """sha256 of a checkpoint's weights: what ties an index to the model whose features it holds."""
    return file_sha256(checkpoint_dir / "model.pt")


def index_version(description: dict, gallery_file: Path, features: np.ndarray) -> str:
    """What a server compares to know the index changed: the same model, gallery table, features and settings give
    the same version (a re-run that changes nothing swaps nothing)."""
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode())
    digest.update(file_sha256(gallery_file).encode())
    digest.update(memoryview(np.ascontiguousarray(features)))  # the array's own bytes, not a copy of them
    return digest.hexdigest()[:VERSION_LENGTH]


def read_description(index_dir: Path) -> dict | None:
    """index/index.json, or None where there is none (or a half-written one)."""
    try:
        return json.loads((index_dir / "index.json").read_text())
    except (OSError, ValueError):
        return None


def _faiss(gallery: pd.DataFrame, features: np.ndarray, params: Params, paths: Paths, folder: Path,
           previous: dict | None, version: str) -> tuple[dict, dict]:
    """index/gallery.faiss, built whole each run."""
    settings = params.index
    faiss.write_index(build_index(features, settings.kind, params.seed, settings), str(folder / "gallery.faiss"))
    return {}, {}


def _milvus(gallery: pd.DataFrame, features: np.ndarray, params: Params, paths: Paths, folder: Path,
            previous: dict | None, version: str) -> tuple[dict, dict]:
    """The Milvus slot the served version does not use, synced by its diff; its manifest goes into index.json."""
    from pipeline.search.milvus_index import next_slot, sync

    collection = next_slot(params.index, previous, version)
    manifest, synced = sync(gallery, features, filterable_columns(gallery), params.index, paths, collection, version)
    return {"milvus": manifest}, synced


# index.backend -> what stores the gallery's features for it: (the description's additions, the report's)
Store = Callable[[pd.DataFrame, np.ndarray, Params, Paths, Path, dict | None, str], tuple[dict, dict]]
BACKENDS: dict[str, Store] = {"faiss": _faiss, "milvus": _milvus}


def run(params: Params, paths: Paths) -> dict[str, object]:
    settings, runtime = params.index, Runtime.start(params.compute)
    model = load_checkpoint(paths.stage2_dir)
    runtime.prepare(model)
    digest = checkpoint_digest(paths.stage2_dir)
    gallery, listed = gallery_table(params, paths)
    cache = FeatureCache(paths.gallery_cache)
    try:
        gallery, features, encoded = gallery_features(model, gallery, cache, feature_signature(model, digest),
                                                      runtime, params.compute.workers, settings.batch_size)
    finally:
        cache.close()
    description = {"model": digest, "checkpoint": str(paths.stage2_dir), "arch": model.arch,
                   "image_encoder": model.image_encoder(), "gallery": params.gallery.root, "images": len(gallery),
                   "dimension": int(features.shape[1]), "reference_prompt": params.triplets.reference_prompt,
                   **settings.model_dump()}
    report: dict[str, object] = {"images": len(gallery), "backend": settings.backend, "kind": settings.kind,
                                 **listed, **encoded}
    previous = read_description(paths.index_dir)
    with atomic_path(paths.index_dir) as tmp:
        tmp.mkdir(parents=True)
        write_parquet(tmp / "gallery.parquet", pa.Table.from_pandas(gallery, preserve_index=False))
        version = index_version(description, tmp / "gallery.parquet", features)
        stored, written = BACKENDS[settings.backend](gallery, features, params, paths, tmp, previous, version)
        description.update(stored)
        report.update(written)
        (tmp / "index.json").write_text(json.dumps({"version": version, **description}, indent=2) + "\n")
    report["version"] = version
    return report
