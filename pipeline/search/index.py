"""The `index` stage: every gallery image's feature from the trained (stage-2) model in a FAISS index, which
`fashion-cir search` and `fashion-cir serve` answer queries from.

    index/gallery.faiss    the FAISS index (`index.kind`); its row i is row i of gallery.parquet
    index/gallery.parquet  name, category, split, path and caption of each image, one row per image file, and a
                           catalogue's attribute columns (what search filters on besides the category)
    index/index.json       which model made it (the checkpoint's sha256, its image encoder), the kind and its
                           settings, and whether query texts end with the reference's caption
                           (triplets.reference_prompt), as in training

The gallery is every image the image store holds (train and val), since a shop searches its whole catalogue.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import faiss
import pandas as pd
import pyarrow as pa

from pipeline.config import Params
from pipeline.data.store import ImageStore
from pipeline.features.encode import stored_image_features
from pipeline.io import atomic_path, write_parquet
from pipeline.models.clip import load_checkpoint
from pipeline.models.preprocessing import preprocessing
from pipeline.paths import Paths
from pipeline.runtime import Runtime
from pipeline.search.faiss_index import build_index

GALLERY_COLUMNS = ["name", "category", "split", "path", "caption"]


def filterable_columns(gallery: pd.DataFrame) -> list[str]:
    """The columns a search may filter on: the category, and a catalogue's attribute columns."""
    return ["category", *[c for c in gallery.columns if c not in GALLERY_COLUMNS]]


def product_attributes(params: Params) -> pd.DataFrame:
    """name plus the attribute columns of a catalogue's products table (FashionIQ and CIRR have none to filter on);
    an attribute named like a gallery column is renamed '<name> (attribute)'."""
    if params.data.source != "catalog":
        return pd.DataFrame({"name": pd.Series(dtype=str)})
    from pipeline.data.catalog import Catalog

    data = params.data
    table = Catalog(Path(data.root), data.catalog, list(data.categories), params.seed).attributes()
    return table.rename(columns={c: f"{c} (attribute)" for c in table.columns if c in GALLERY_COLUMNS[1:]})


def checkpoint_digest(checkpoint_dir: Path) -> str:
    """sha256 of a checkpoint's weights: what ties an index to the model whose features it holds."""
    digest = hashlib.sha256()
    with open(checkpoint_dir / "model.pt", "rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run(params: Params, paths: Paths) -> dict[str, object]:
    settings, runtime = params.index, Runtime.start(params.compute)
    model = load_checkpoint(paths.stage2_dir)
    runtime.prepare(model)
    store = ImageStore.open(paths.image_store)
    store.check(preprocessing(model), f"the checkpoint in {paths.stage2_dir}")
    captions = pd.read_parquet(paths.captions).drop_duplicates("path").reset_index(drop=True)
    gallery, rows, lacking = store.select(captions)
    gallery = gallery[GALLERY_COLUMNS].merge(product_attributes(params), on="name", how="left").fillna("")
    features = stored_image_features(model, store, rows, settings.batch_size, runtime, desc="embed gallery").numpy()
    index = build_index(features, settings.kind, params.seed, settings)
    description = {"model": checkpoint_digest(paths.stage2_dir), "checkpoint": str(paths.stage2_dir),
                   "arch": model.arch, "image_encoder": model.image_encoder(), "images": len(gallery),
                   "dimension": int(features.shape[1]),
                   "reference_prompt": params.triplets.reference_prompt, **settings.model_dump()}
    with atomic_path(paths.index_dir) as tmp:
        tmp.mkdir(parents=True)
        faiss.write_index(index, str(tmp / "gallery.faiss"))
        write_parquet(tmp / "gallery.parquet", pa.Table.from_pandas(gallery, preserve_index=False))
        (tmp / "index.json").write_text(json.dumps(description, indent=2) + "\n")
    return {"images": len(gallery), "undecodable_images": lacking, "kind": settings.kind}
