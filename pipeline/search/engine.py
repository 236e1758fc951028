"""Queries against the gallery index: the trained model and the index loaded once, then a query in, the top k out.

Three kinds of query, as a shop's search needs them:

    composed  a reference image (a gallery image by name, an image file, or uploaded bytes) plus a modification
              text, composed as in training and evaluation: the reference's image feature with the text feature of
              "<modification text>. <reference caption>" when the model was trained with reference prompts
              (index.json says so); an image from outside the gallery has no caption, so its query text is the
              modification text alone
    text      a text alone ("a red floral dress"), its text feature against the gallery's image features
    image     a reference alone ("more like this"), its image feature against the gallery's

A gallery reference's image feature is read back from the index (the feature the `index` stage computed from the
same stored pixels with the same model) rather than decoded and encoded again, unless the index keeps only
approximations (ivfpq without refine). Filters (pipeline/search/filters.py) narrow the gallery inside the
nearest-neighbour search. A query with a
gallery reference searches the reference's category unless told to search every category (as the model was trained
and evaluated: within a category), or unless a filter names the category itself. The reference itself is left out
of the results (a shop never answers "this one" to "like this but red").
"""

from __future__ import annotations

import io
import json
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image

from pipeline.data.images import open_rgb
from pipeline.errors import PipelineError
from pipeline.models.clip import load_checkpoint, tokenizer_for
from pipeline.models.preprocessing import image_loader, preprocessing
from pipeline.models.retrieval import RetrievalModel
from pipeline.paths import Paths
from pipeline.search.filters import Condition, GalleryFilter, parse_where
from pipeline.search.gallery import filterable_columns
from pipeline.search.index import checkpoint_digest
from pipeline.search.names import GalleryNames
from pipeline.search.vectors import GalleryVectors, open_vectors
from pipeline.triplets.query_text import triplet_query_text

MAX_K = 1000
MAX_PIXELS = 40_000_000  # an upload or file with more pixels (by its header) is refused before decoding


@dataclass(frozen=True)
class Hit:
    rank: int
    name: str
    category: str
    score: float
    path: str


QueryKind = Literal["composed", "text", "image"]


@dataclass(frozen=True)
class Answer:
    """One query's top k, with what the query was made of."""

    kind: QueryKind
    reference: str          # the gallery name, or the file it came from ("upload" for bytes); "" for a text query
    text: str               # the text as given ("" for an image query)
    query_text: str         # what the text tower read ("" for an image query)
    filters: list[str] = field(default_factory=list)  # every filter applied, the reference's category included
    hits: list[Hit] = field(default_factory=list)
    milliseconds: float = 0.0
    version: str = ""       # the index version that answered (index/index.json)


class SearchEngine:
    """The stage-2 model and the gallery index, checked to belong together."""

    def __init__(self, model: RetrievalModel, vectors: GalleryVectors, gallery: pd.DataFrame, description: dict,
                 gallery_filter: GalleryFilter, root: Path = Path(".")):
        self.model, self.vectors, self.gallery, self.description = model.eval(), vectors, gallery, description
        self.version = str(description.get("version", ""))
        self.known = GalleryNames(gallery, root, str(description.get("gallery", "")))
        self.tokenizer = tokenizer_for(model.arch)
        self.loader = image_loader(preprocessing(model))
        self.row_of = {name: i for i, name in enumerate(gallery["name"])}
        self.names, self.categories, self.paths = (gallery[c].astype(str).tolist()
                                                   for c in ("name", "category", "path"))  # pandas rows are slow
        self.filter = gallery_filter  # checks a query's filters; the vectors translate them
        self.category_names = sorted(set(self.categories))
        self.stored_exactly = vectors.exact  # a gallery reference's feature is read back from the index

    @classmethod
    def open(cls, paths: Paths = Paths(), checkpoint: Path | None = None, serving: SearchEngine | None = None,
             description: dict | None = None) -> SearchEngine:
        """The index under `paths` (described by `description`, index.json unless given) and the model it was
        built from (or `checkpoint`, which must be that model). The model of `serving`, an engine already open, is
        shared when the index was built from it, rather than loaded again."""
        meta = paths.index_dir / "index.json"
        if not meta.is_file() or not (paths.index_dir / "gallery.parquet").is_file():
            raise PipelineError(f"no search index at {paths.index_dir}; build it with `dvc repro` (the `index` "
                                f"stage runs after `stage2`).")
        description = description or json.loads(meta.read_text())
        gallery = pd.read_parquet(paths.index_dir / "gallery.parquet")
        gallery["path"] = [str(paths.root / path) for path in gallery["path"]]  # stored relative to the repository
        gallery_filter = GalleryFilter(gallery[filterable_columns(gallery)])
        names = gallery["name"].astype(str).tolist()
        if serving is not None and serving.description["model"] == description["model"]:
            vectors = open_vectors(description, paths, names, gallery_filter)
            return cls(serving.model, vectors, gallery, description, gallery_filter, paths.root)
        checkpoint = checkpoint or paths.stage2_dir
        if not (checkpoint / "model.pt").is_file():
            raise PipelineError(f"{checkpoint / 'model.pt'} is missing; run `dvc repro` first.")
        if checkpoint_digest(checkpoint) != description["model"]:
            raise PipelineError(f"the index at {paths.index_dir} was built from another model than the one in "
                                f"{checkpoint}; run `dvc repro` to rebuild it for this model.")
        vectors = open_vectors(description, paths, names, gallery_filter)
        return cls(load_checkpoint(checkpoint, root=paths.root), vectors, gallery, description, gallery_filter,
                   paths.root)

    def close(self) -> None:
        """Let go of the index's connection (Milvus); called once no search uses this engine."""
        self.vectors.close()

    def resolve(self, reference: str | Path, files: bool = True) -> str | None:
        """The gallery name a reference stands for (pipeline/search/names.py), None outside the gallery."""
        return self.known.resolve(reference, files)

    def reference_pixels(self, image: str | Path | bytes) -> tuple[torch.Tensor, str, str]:
        """uint8 [1, 3, H, W] of the reference, its label, and its caption ("" outside the gallery).

        A string is a gallery image when it names one (its name, file name or path: pipeline/search/names.py), else
        a path to an image file. An image file or upload is refused before decoding when its header declares more
        than MAX_PIXELS pixels."""
        if isinstance(image, bytes):
            picture, label, caption = _readable(io.BytesIO(image), "the uploaded file"), "upload", ""
        elif (name := self.resolve(image)) is not None:
            row = self.gallery.iloc[self.row_of[name]]
            picture, label, caption = open_rgb(row["path"]), name, str(row["caption"])
            if picture is None:
                raise PipelineError(f"gallery image '{name}' ({row['path']}) can no longer be read.")
        else:
            path = Path(image)
            if not path.is_file():
                raise PipelineError(f"--image '{image}' is neither a gallery image name nor an existing file.")
            picture, label, caption = _readable(path, str(path)), str(path), ""
        return self.loader(picture)[None], label, caption

    def query_text(self, text: str, caption: str) -> str:
        return triplet_query_text(text, "", caption if self.description.get("reference_prompt") else "")

    def conditions(self, where: list[str], label: str, every_category: bool) -> list[Condition]:
        """The filters asked for, plus the reference's category when the reference is a gallery image, unless
        `every_category` or a filter on the category says otherwise."""
        conditions = [parse_where(text) for text in where]
        if label in self.row_of and not every_category and all(c.column != "category" for c in conditions):
            conditions.append(Condition("category", "=", (str(self.gallery["category"].iat[self.row_of[label]]),)))
        return conditions

    def search(self, image: str | Path | bytes | None, text: str | None, k: int = 10, where: list[str] = (),
               every_category: bool = False) -> Answer:
        """The k gallery images nearest one query, best first (see search_many)."""
        answer = self.search_many([Query(image, text or "", k, tuple(where), every_category)])[0]
        if isinstance(answer, PipelineError):
            raise answer
        return answer

    @torch.no_grad()
    def search_many(self, queries: list[Query], phases: dict[str, float] | None = None
                    ) -> list[Answer | PipelineError]:
        """Each query's k nearest gallery images, best first: composed (a reference and a text), text alone, or
        image alone, within the rows its filters allow (and its reference's category: see the module's docstring).
        The queries are encoded together, one batch of images and one of texts, which is what lets a server answer
        concurrent requests faster than one by one. A query that cannot be answered gets its one-sentence error in
        its place; the others are answered. `phases`, when given, receives the seconds the batch spent preparing
        (decoding references, parsing filters), encoding and searching."""
        clock = started = time.perf_counter()
        times = phases if phases is not None else {}

        def lap(phase: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            times[phase], clock = now - clock, now

        prepared: list[_Prepared | PipelineError] = []
        for query in queries:
            try:
                prepared.append(self._prepare(query))
            except PipelineError as error:
                prepared.append(error)
        ready = [p for p in prepared if isinstance(p, _Prepared)]
        lap("prepare")
        if not ready:
            return list(prepared)  # type: ignore[arg-type]
        features = self._encode(ready)
        lap("encode")
        answers: dict[int, Answer] = {}
        for positions in _by_filters(ready):
            k = max(ready[i].query.k for i in positions) + 1  # the reference may come back first
            group = ready[positions[0]]
            scores, rows = self.vectors.search(features[positions], k, group.conditions)
            for i, score_row, row_row in zip(positions, scores, rows, strict=True):
                answers[id(ready[i])] = self._answer(ready[i], score_row, row_row)
        lap("search")
        milliseconds = (time.perf_counter() - started) * 1000  # the batch's: each query waited for all of it
        return [p if isinstance(p, PipelineError) else replace(answers[id(p)], milliseconds=milliseconds)
                for p in prepared]

    def _prepare(self, query: Query) -> _Prepared:
        """A query checked (its filters included), its reference decoded and its text formed."""
        text = query.text.strip()
        if query.image is None and not text:
            raise PipelineError("the query is empty; give a text (\"a red floral dress\"), a reference image, or "
                                "both (\"is red with long sleeves\" on a reference).")
        if not 1 <= query.k <= MAX_K:
            raise PipelineError(f"k = {query.k} is not allowed: use 1 to {MAX_K}.")
        kind: QueryKind = "text" if query.image is None else ("image" if not text else "composed")
        pixels, row, label, caption = None, None, "", ""
        name = self.resolve(query.image) if isinstance(query.image, (str, Path)) else None
        if name is not None and self.stored_exactly:
            row, label = self.row_of[name], name  # its feature is in the index: nothing to decode
            caption = str(self.gallery["caption"].iat[row])
        elif query.image is not None:
            pixels, label, caption = self.reference_pixels(query.image)
        conditions = self.conditions(list(query.where), label, query.every_category)
        self.filter.check(conditions)
        return _Prepared(query, kind, pixels, row, label,
                         self.query_text(text, caption) if kind == "composed" else text, conditions)

    def _encode(self, ready: list[_Prepared]) -> np.ndarray:
        """[len(ready), D] query features: the decoded images in one batch, a gallery reference's feature read from
        the index, the texts in one batch, then the composed ones composed in one batch."""
        image, text = torch.zeros(len(ready), self.model.embed_dim), torch.zeros(len(ready), self.model.embed_dim)
        decoded = [i for i, p in enumerate(ready) if p.pixels is not None]
        if decoded:
            image[decoded] = self.model.encode_images(torch.cat([ready[i].pixels for i in decoded])).cpu()
        stored = [i for i, p in enumerate(ready) if p.gallery_row is not None]
        if stored:
            rows = np.array([ready[i].gallery_row for i in stored], dtype=np.int64)
            image[stored] = torch.from_numpy(self.vectors.vectors(rows))
        worded = [i for i, p in enumerate(ready) if p.query_text]
        if worded:
            text[worded] = self.model.encode_texts(self.tokenizer([ready[i].query_text for i in worded])).cpu()
        features = torch.stack([text[i] if p.kind == "text" else image[i] for i, p in enumerate(ready)])
        composed = [i for i, p in enumerate(ready) if p.kind == "composed"]
        if composed:
            features[composed] = self.model.compose(image[composed].to(self.model.device),
                                                    text[composed].to(self.model.device)).cpu()
        return features.numpy().astype(np.float32)

    def _answer(self, p: _Prepared, scores: np.ndarray, rows: np.ndarray) -> Answer:
        hits = []
        for score, row in zip(scores, rows, strict=True):
            if row < 0 or self.names[row] == p.label or len(hits) == p.query.k:
                continue
            hits.append(Hit(len(hits) + 1, self.names[row], self.categories[row], float(score), self.paths[row]))
        return Answer(p.kind, p.label, p.query.text.strip(), p.query_text, [str(c) for c in p.conditions], hits,
                      version=self.version)


@dataclass(frozen=True)
class Query:
    """One query as asked: a reference (a gallery name, an image file, uploaded bytes) and/or a text."""

    image: str | Path | bytes | None = None
    text: str = ""
    k: int = 10
    where: tuple[str, ...] = ()
    every_category: bool = False


@dataclass(frozen=True, eq=False)
class _Prepared:
    query: Query
    kind: QueryKind
    pixels: torch.Tensor | None  # a reference to encode (a file, an upload)
    gallery_row: int | None  # a gallery reference whose feature the index holds
    label: str
    query_text: str
    conditions: list[Condition]


def _by_filters(ready: list[_Prepared]) -> list[list[int]]:
    """The positions of the queries grouped by the filters they search within (one search call per group)."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, p in enumerate(ready):
        groups.setdefault(tuple(sorted(map(str, p.conditions))), []).append(i)
    return list(groups.values())


def _readable(source: io.BytesIO | Path, what: str) -> Image.Image:
    """The image of an upload or a file, its size read from its header and refused above MAX_PIXELS before any
    pixel is decoded (a small PNG can declare a huge canvas)."""
    limit = f"more than the {MAX_PIXELS // 1_000_000} million pixels this search decodes; send a smaller image"
    try:
        with warnings.catch_warnings():  # the size is judged here, not by Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as header:
                width, height = header.size
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours: refused by the header as well
        raise PipelineError(f"{what} has {limit}.") from None
    except (OSError, ValueError):
        raise PipelineError(f"{what} is not an image Pillow can read (JPEG, PNG, WebP, ...).") from None
    if width * height > MAX_PIXELS:
        raise PipelineError(f"{what} is {width} x {height} pixels, {limit}.")
    if isinstance(source, io.BytesIO):
        source.seek(0)
    picture = open_rgb(source)
    if picture is None:
        raise PipelineError(f"{what} is not an image Pillow can read (JPEG, PNG, WebP, ...).")
    return picture
