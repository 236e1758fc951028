"""Composed queries against the gallery index: the trained model and the index loaded once, then a reference image
(a gallery image by name, an image file, or uploaded bytes) plus a modification text in, the top k out.

The query is formed as in training and evaluation: the reference's image feature composed with the text feature of
"<modification text>. <reference caption>" when the model was trained with reference prompts (index.json says so);
an image from outside the gallery has no caption, so its query text is the modification text alone. The reference
itself is left out of the results (a shop never answers "this one" to "like this but red").
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import torch

from pipeline.data.images import open_rgb
from pipeline.errors import PipelineError
from pipeline.models.clip import load_checkpoint, tokenizer_for
from pipeline.models.preprocessing import image_loader, preprocessing
from pipeline.models.retrieval import RetrievalModel
from pipeline.paths import Paths
from pipeline.search.index import checkpoint_digest
from pipeline.triplets.query_text import triplet_query_text

MAX_K = 1000


@dataclass(frozen=True)
class Hit:
    rank: int
    name: str
    category: str
    score: float
    path: str


@dataclass(frozen=True)
class Answer:
    """One query's top k, with what the query was made of."""

    reference: str          # the gallery name, or the file it came from ("upload" for bytes)
    text: str               # the modification text as given
    query_text: str         # what the text tower read
    hits: list[Hit] = field(default_factory=list)
    milliseconds: float = 0.0


class SearchEngine:
    """The stage-2 model and the gallery index, checked to belong together."""

    def __init__(self, model: RetrievalModel, index: faiss.Index, gallery: pd.DataFrame, description: dict):
        self.model, self.index, self.gallery, self.description = model.eval(), index, gallery, description
        self.tokenizer = tokenizer_for(model.arch)
        self.loader = image_loader(preprocessing(model))
        self.row_of = {name: i for i, name in enumerate(gallery["name"])}

    @classmethod
    def open(cls, paths: Paths = Paths(), checkpoint: Path | None = None) -> SearchEngine:
        """The index under `paths` and the model it was built from (or `checkpoint`, which must be that model)."""
        index_file, meta = paths.index_dir / "gallery.faiss", paths.index_dir / "index.json"
        if not index_file.is_file() or not meta.is_file():
            raise PipelineError(f"no search index at {paths.index_dir}; build it with `dvc repro` (the `index` "
                                f"stage runs after `stage2`).")
        description = json.loads(meta.read_text())
        checkpoint = checkpoint or paths.stage2_dir
        if not (checkpoint / "model.pt").is_file():
            raise PipelineError(f"{checkpoint / 'model.pt'} is missing; run `dvc repro` first.")
        if checkpoint_digest(checkpoint) != description["model"]:
            raise PipelineError(f"the index at {paths.index_dir} was built from another model than the one in "
                                f"{checkpoint}; run `dvc repro` to rebuild it for this model.")
        gallery = pd.read_parquet(paths.index_dir / "gallery.parquet")
        gallery["path"] = [str(paths.root / path) for path in gallery["path"]]  # stored relative to the repository
        return cls(load_checkpoint(checkpoint, root=paths.root), faiss.read_index(str(index_file)), gallery,
                   description)

    def reference_pixels(self, image: str | Path | bytes) -> tuple[torch.Tensor, str, str]:
        """uint8 [1, 3, H, W] of the reference, its label, and its caption ("" outside the gallery).

        A string is a gallery image's name when the gallery has one of that name, else a path to an image file."""
        if isinstance(image, bytes):
            picture, label, caption = open_rgb(io.BytesIO(image)), "upload", ""
            if picture is None:
                raise PipelineError("the uploaded file is not an image Pillow can read (JPEG, PNG, WebP, ...).")
        elif str(image) in self.row_of:
            row = self.gallery.iloc[self.row_of[str(image)]]
            picture, label, caption = open_rgb(row["path"]), str(image), str(row["caption"])
            if picture is None:
                raise PipelineError(f"gallery image '{image}' ({row['path']}) can no longer be read.")
        else:
            path = Path(image)
            if not path.is_file():
                raise PipelineError(f"--image '{image}' is neither a gallery image name nor an existing file.")
            picture, label, caption = open_rgb(path), str(path), ""
            if picture is None:
                raise PipelineError(f"{path} is not an image Pillow can read (JPEG, PNG, WebP, ...).")
        return self.loader(picture)[None], label, caption

    def query_text(self, text: str, caption: str) -> str:
        return triplet_query_text(text, "", caption if self.description.get("reference_prompt") else "")

    @torch.no_grad()
    def search(self, image: str | Path | bytes, text: str, k: int = 10) -> Answer:
        """The k gallery images nearest the composed query, best first (the reference left out)."""
        if not text.strip():
            raise PipelineError("the modification text is empty; say what should change, e.g. \"is red with long "
                                "sleeves\".")
        if not 1 <= k <= MAX_K:
            raise PipelineError(f"k = {k} is not allowed: use 1 to {MAX_K}.")
        started = time.perf_counter()
        pixels, label, caption = self.reference_pixels(image)
        query_text = self.query_text(text, caption)
        image_feature = self.model.encode_images(pixels)
        text_feature = self.model.encode_texts(self.tokenizer([query_text]))
        query = self.model.compose(image_feature, text_feature).cpu().numpy().astype(np.float32)
        scores, rows = self.index.search(query, min(k + 1, self.index.ntotal))
        hits = []
        for score, row in zip(scores[0], rows[0], strict=True):
            if row < 0 or self.gallery["name"].iat[row] == label or len(hits) == k:
                continue
            entry = self.gallery.iloc[row]
            hits.append(Hit(len(hits) + 1, str(entry["name"]), str(entry["category"]), float(score),
                            str(entry["path"])))
        return Answer(label, text, query_text, hits, (time.perf_counter() - started) * 1000)
