"""The search gallery: which images it holds (with their captions and filterable columns), and their features from
the trained model, computed only for images not seen before.

Two kinds of gallery (`gallery.root`):

    the training data   gallery.root is data.root (the default): every image the dataset's reader lists, with the
                        captions the `caption` stage wrote
    a live catalogue    another folder in the catalogue layout (images/ + products.csv, columns as data.catalog names
                        them), which a shop changes daily: its images are captioned here with `caption.*`'s backend
                        through the gallery's own cache, so only new images reach the captioner

Either way each image file is keyed by its content (read again only when its size or modification time changed,
pipeline/data/digests.py); the features the cache lacks for this model are decoded and
encoded here, the rest are read back (data/gallery/cache.sqlite, both caches in one file). So the `index` stage
after 50 products were added encodes 50 images, whatever the gallery's size, and never runs a training stage: its
DVC dependencies are the gallery folder and the trained model, not the training data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.captioning.backends import build_captioner
from pipeline.captioning.cache import CaptionCache
from pipeline.captioning.caption import caption_images
from pipeline.config import Params
from pipeline.data.catalog import Catalog
from pipeline.data.store import decode_files
from pipeline.errors import PipelineError
from pipeline.models.preprocessing import image_loader, preprocessing
from pipeline.models.retrieval import RetrievalModel
from pipeline.paths import Paths
from pipeline.runtime import Runtime
from pipeline.search.feature_cache import FeatureCache

GALLERY_COLUMNS = ["name", "category", "split", "path", "caption"]


def filterable_columns(gallery: pd.DataFrame) -> list[str]:
    """The columns a search may filter on: the category, and a catalogue's attribute columns."""
    return ["category", *[c for c in gallery.columns if c not in GALLERY_COLUMNS]]


def is_training_data(params: Params) -> bool:
    """Whether the gallery is the folder the model trained on (then its captions are the `caption` stage's)."""
    return Path(params.gallery.root).resolve() == Path(params.data.root).resolve()


def _attributes(catalog: Catalog) -> pd.DataFrame:
    """name plus a catalogue's attribute columns; one named like a gallery column becomes '<name> (attribute)'."""
    table = catalog.attributes()
    return table.rename(columns={c: f"{c} (attribute)" for c in table.columns if c in GALLERY_COLUMNS[1:]})


def _with_attributes(captioned: pd.DataFrame, attributes: pd.DataFrame) -> pd.DataFrame:
    gallery = captioned.drop_duplicates("path").reset_index(drop=True)[GALLERY_COLUMNS]
    return gallery.merge(attributes, on="name", how="left").fillna("")


def gallery_table(params: Params, paths: Paths) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per gallery image file (GALLERY_COLUMNS, then the attribute columns search filters on), and the
    counts of what was captioned, read back from the cache, or left out."""
    data = params.data
    if is_training_data(params):
        captioned = pd.read_parquet(paths.captions)
        attributes = (_attributes(Catalog(Path(data.root), data.catalog, list(data.categories), params.seed))
                      if data.source == "catalog" else pd.DataFrame({"name": pd.Series(dtype=str)}))
        return _with_attributes(captioned, attributes), {}
    try:
        catalog = Catalog(Path(params.gallery.root), data.catalog, [], params.seed, key="gallery.root")
    except PipelineError as error:
        raise PipelineError(f"{str(error).rstrip('.')}; a gallery other than the training data (data.root = "
                            f"'{data.root}') is a catalogue folder, or set gallery.root to data.root to search the "
                            f"training data.") from None
    images = pd.concat([catalog.images(split) for split in catalog.splits], ignore_index=True)
    tags = {name: words for split in catalog.splits for name, words in catalog.tags(split).items()}
    cache = CaptionCache(paths.gallery_cache)
    try:
        with build_captioner(params.caption, log_dir=paths.gallery_dir) as captioner:
            captioned, report = caption_images(images, tags, captioner, cache, params.caption.batch_size)
    finally:
        cache.close()
    counts = {"captioned": report.get("captioned", 0), "captions_cached": report.get("cached", 0),
              "caption_failures": report.get("failed", 0) + report.get("corrupt", 0), **catalog.missing}
    return _with_attributes(captioned, _attributes(catalog)), counts


def feature_signature(model: RetrievalModel, checkpoint_digest: str) -> str:
    """What a cached feature depends on besides the image bytes: the weights and how images are prepared."""
    description = json.dumps({"model": checkpoint_digest, "preprocessing": preprocessing(model)}, sort_keys=True)
    return hashlib.sha256(description.encode()).hexdigest()[:16]


@torch.no_grad()
def gallery_features(model: RetrievalModel, gallery: pd.DataFrame, cache: FeatureCache, signature: str,
                     runtime: Runtime, workers: int, batch_size: int
                     ) -> tuple[pd.DataFrame, np.ndarray, dict[str, int]]:
    """The gallery's rows whose image could be decoded, their features [N, D] in that order, and how many images
    were encoded now and read from the cache. New images are encoded `batch_size` at a time, each batch committed
    to the cache before the next."""
    model.eval()
    keys = cache.files.of(gallery["path"].tolist(), desc="hash gallery")
    distinct = sorted({key for key in keys if key})
    found = cache.get_many(distinct, signature)
    reused = len(found)
    todo = {key: path for key, path in zip(keys, gallery["path"], strict=True) if key and key not in found}
    loader, encoded = image_loader(preprocessing(model)), 0
    if todo:
        for pixels, ok, digests in decode_files(list(todo.values()), loader, workers, desc="encode new images",
                                                  batch_size=batch_size):
            if not ok.any():
                continue
            with runtime.autocast():
                vectors = model.encode_images(pixels[torch.from_numpy(ok)].to(runtime.device)).float().cpu().numpy()
            fresh = [digest for digest, good in zip(digests, ok, strict=True) if good]
            cache.put_many(fresh, vectors, signature)
            found.update(zip(fresh, vectors, strict=True))
            encoded += len(fresh)
    kept = [i for i, key in enumerate(keys) if key in found]
    features = (np.stack([found[keys[i]] for i in kept]).astype(np.float32) if kept
                else np.empty((0, model.embed_dim), dtype=np.float32))
    counts = {"encoded": encoded, "features_cached": reused, "undecodable_images": len(keys) - len(kept)}
    return gallery.iloc[kept].reset_index(drop=True), features, counts
