"""The names a shop calls its gallery images by, all leading to the one name the index knows.

A gallery image's name is its products.csv value without the extension (`15977` for `15977.jpg`). A shop's own
systems hold the value as written (`15977.jpg`), or the file's path: under the gallery root (`images/15977.jpg`),
under the repository (`shop/images/15977.jpg`), or absolute. Each of these finds the image, with its category and
caption; a path to a file outside the gallery stays an outside image.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def _normal(text: str) -> str:
    return os.path.normpath(text.strip()).replace(os.sep, "/")


class GalleryNames:
    """name, file name, and the file's path under the gallery root, the repository, or absolute -> name."""

    def __init__(self, gallery: pd.DataFrame, root: Path, gallery_root: str):
        """`gallery`: the index's table, its `path` column relative to the repository `root` or absolute;
        `gallery_root` as params.yaml's gallery.root gives it (relative to the repository, or absolute)."""
        root = root.resolve()
        under = (root / gallery_root).resolve()
        self.known: dict[str, str] = {}
        for name, stored in zip(gallery["name"].astype(str), gallery["path"].astype(str), strict=True):
            absolute = (root / stored).resolve()
            spellings = [os.path.basename(stored), str(absolute)]
            spellings += [absolute.relative_to(base).as_posix() for base in (under, root)
                          if absolute.is_relative_to(base)]
            for spelling in spellings:
                self.known.setdefault(spelling, name)
        self.known.update({name: name for name in gallery["name"].astype(str)})  # a name is never another's alias

    def resolve(self, reference: str | Path, files: bool = True) -> str | None:
        """The gallery name `reference` stands for, or None for an image outside the gallery (or no image). With
        `files`, a path from wherever the caller stands (a link, `..`) is resolved on disk; a server asks without,
        so a request never makes it look at the file system."""
        text = str(reference)
        if text in self.known:
            return self.known[text]
        if not text.strip():
            return None
        found = self.known.get(_normal(text))
        if found is None and files and os.path.isfile(text):
            found = self.known.get(str(Path(text).resolve()))
        return found
