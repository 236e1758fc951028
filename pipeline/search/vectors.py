"""Where the gallery's vectors live, as the search engine sees it: a FAISS index in a file (the default) or a Milvus
collection (pipeline/search/milvus_index.py). Both answer the same two questions, so the engine, its filters and
its three kinds of query are one code path over either."""

from __future__ import annotations

from typing import Protocol

import faiss
import numpy as np

from pipeline.paths import Paths
from pipeline.search.faiss_index import enable_reconstruction, search_within, stores_exact_vectors
from pipeline.search.filters import Condition


class GalleryVectors(Protocol):
    exact: bool  # whether vectors() gives back the very features the index was built from

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None, conditions: list[Condition]
               ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, gallery rows) of each query's k nearest among the rows the filters allow (`allowed`, the same
        filters as a mask over the rows, is what a backend without its own filter language uses); row -1 where
        fewer than k are allowed."""

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """[len(rows), D] the stored features of gallery rows."""

    def close(self) -> None:
        """Let go of what it holds (a connection); called once no search uses it any more."""


class FaissVectors:
    """The FAISS index the `index` stage wrote (index/gallery.faiss); its row i is the gallery's row i."""

    def __init__(self, index: faiss.Index):
        self.index = enable_reconstruction(index)
        self.exact = stores_exact_vectors(self.index)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None, conditions: list[Condition]
               ) -> tuple[np.ndarray, np.ndarray]:
        return search_within(self.index, queries, k, allowed)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        return self.index.reconstruct_batch(np.asarray(rows, dtype=np.int64))

    def close(self) -> None:
        """Nothing to let go of: the index is memory, freed with the object."""


def open_vectors(description: dict, paths: Paths, names: list[str]) -> GalleryVectors:
    """The vectors an index description (index/index.json) points at, for a gallery whose names are `names`."""
    if description.get("backend", "faiss") == "milvus":
        from pipeline.search.milvus_index import MilvusVectors

        return MilvusVectors.open(description["milvus"], paths, names)
    return FaissVectors(faiss.read_index(str(paths.index_dir / "gallery.faiss")))
