"""Where the gallery's vectors live, as the search engine sees it: a FAISS index in a file (the default) or a Milvus
collection (pipeline/search/milvus_index.py). Both answer the same two questions, and each is given a search's
filters as they were parsed (pipeline/search/filters.py) and translates them itself, so the engine, its filters and
its three kinds of query are one code path over either."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import faiss
import numpy as np

from pipeline.paths import Paths
from pipeline.search.faiss_index import enable_reconstruction, search_within, stores_exact_vectors
from pipeline.search.filters import Condition, GalleryFilter


class GalleryVectors(Protocol):
    exact: bool  # whether vectors() gives back the very features the index was built from

    def search(self, queries: np.ndarray, k: int, conditions: list[Condition]) -> tuple[np.ndarray, np.ndarray]:
        """(scores, gallery rows) of each query's k nearest among the rows the filters allow (`conditions`, already
        checked: GalleryFilter.check), the filters applied inside the search; row -1 where fewer than k are
        allowed."""

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """[len(rows), D] the stored features of gallery rows."""

    def close(self) -> None:
        """Let go of what it holds (a connection); called once no search uses it any more."""


class FaissVectors:
    """The FAISS index the `index` stage wrote (index/gallery.faiss); its row i is the gallery's row i. Filters
    become the mask of the rows they allow, which FAISS searches within (its ID selector, or an exact scan)."""

    def __init__(self, index: faiss.Index, rows: GalleryFilter):
        self.index, self.rows = enable_reconstruction(index), rows
        self.exact = stores_exact_vectors(self.index)

    @classmethod
    def open(cls, description: dict, paths: Paths, names: list[str], rows: GalleryFilter) -> FaissVectors:
        return cls(faiss.read_index(str(paths.index_dir / "gallery.faiss")), rows)

    def search(self, queries: np.ndarray, k: int, conditions: list[Condition]) -> tuple[np.ndarray, np.ndarray]:
        return search_within(self.index, queries, k, self.rows.allowed(conditions))

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        return self.index.reconstruct_batch(np.asarray(rows, dtype=np.int64))

    def close(self) -> None:
        """Nothing to let go of: the index is memory, freed with the object."""


def _milvus(description: dict, paths: Paths, names: list[str], rows: GalleryFilter) -> GalleryVectors:
    from pipeline.search.milvus_index import MilvusVectors  # pymilvus only where this backend is used

    return MilvusVectors.open(description["milvus"], paths, names)


Opener = Callable[[dict, Paths, list[str], GalleryFilter], GalleryVectors]
BACKENDS: dict[str, Opener] = {"faiss": FaissVectors.open, "milvus": _milvus}


def open_vectors(description: dict, paths: Paths, names: list[str], rows: GalleryFilter) -> GalleryVectors:
    """The vectors an index description (index/index.json) points at, for a gallery whose names are `names` and
    whose filterable columns are `rows`."""
    return BACKENDS[description.get("backend", "faiss")](description, paths, names, rows)
