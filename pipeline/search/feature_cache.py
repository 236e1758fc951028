"""Persistent per-image feature cache for the search gallery, keyed by the image's content and the model.

SQLite, committed after every batch, like the caption cache (pipeline/captioning/cache.py): a shop that adds 50
products to a gallery of 100,000 encodes 50 images, and a killed run keeps every feature finished so far. Keying by
content (not file name) means a renamed image keeps its feature and a changed image gets a new one; keying by the
model's signature means a retrained model never reads another model's features.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from pipeline.data.digests import FileDigests


class FeatureCache:
    """Features by content and model, and (`files`) the content digest of each image file seen, by size and mtime."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.files = FileDigests(path)
        self._db = sqlite3.connect(str(path))
        self._db.execute("CREATE TABLE IF NOT EXISTS features (content_key TEXT, signature TEXT, vector BLOB, "
                         "PRIMARY KEY (content_key, signature))")
        self._db.commit()

    def get_many(self, keys: list[str], signature: str) -> dict[str, np.ndarray]:
        """The cached float32 feature of each key that has one."""
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            rows = self._db.execute(
                f"SELECT content_key, vector FROM features WHERE signature = ? "
                f"AND content_key IN ({','.join('?' * len(chunk))})", [signature, *chunk])
            for key, vector in rows:
                found[key] = np.frombuffer(vector, dtype=np.float32)
        return found

    def put_many(self, keys: list[str], vectors: np.ndarray, signature: str) -> None:
        """Store and commit a batch of features at once."""
        self._db.executemany(
            "INSERT OR REPLACE INTO features (content_key, signature, vector) VALUES (?, ?, ?)",
            [(key, signature, np.ascontiguousarray(vector, dtype=np.float32).tobytes())
             for key, vector in zip(keys, vectors, strict=True)])
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM features").fetchone()[0]

    def close(self) -> None:
        self.files.close()
        self._db.close()
