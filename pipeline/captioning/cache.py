"""Persistent per-image caption cache, keyed by image content (plus any other input
the backend reads, such as tags) and the captioner's signature.

SQLite, committed after every batch: a killed run keeps every caption finished so far, and a repeated run with the
same backend, model and prompt asks the backend for nothing. Keying by content (not file name) means a re-downloaded
or renamed image keeps its caption, and a changed image gets a new one.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from pipeline.captioning.attributes import Attributes
from pipeline.captioning.base import Caption
from pipeline.data.digests import FileDigests


def caption_key(content: str, input_key: str = "") -> str:
    """The image's content digest (pipeline/data/digests.py), combined with whatever else the backend's output
    depends on (see Captioner.input_key); "" for an image that could not be read."""
    if not content or not input_key:
        return content
    return hashlib.sha256(f"{content}\0{input_key}".encode()).hexdigest()


class CaptionCache:
    """Captions by content, and (`files`) the content digest of each image file seen, by size and mtime."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.files = FileDigests(path)
        self._db = sqlite3.connect(str(path))
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS captions (content_key TEXT, signature TEXT, attributes TEXT, raw TEXT,"
            " description TEXT NOT NULL DEFAULT '', PRIMARY KEY (content_key, signature))")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(captions)")}
        if "description" not in columns:  # caches written before free-text descriptions existed
            self._db.execute("ALTER TABLE captions ADD COLUMN description TEXT NOT NULL DEFAULT ''")
        self._db.commit()

    def get_many(self, digests: list[str], signature: str) -> dict[str, Caption]:
        found: dict[str, Caption] = {}
        for start in range(0, len(digests), 500):
            chunk = digests[start:start + 500]
            rows = self._db.execute(
                f"SELECT content_key, attributes, raw, description FROM captions WHERE signature = ? "
                f"AND content_key IN ({','.join('?' * len(chunk))})", [signature, *chunk])
            for digest, attributes, raw, description in rows:
                found[digest] = Caption(Attributes.from_dict(json.loads(attributes)), raw, description)
        return found

    def put_many(self, items: list[tuple[str, Caption]], signature: str) -> None:
        """Store and commit a batch of captions at once."""
        self._db.executemany(
            "INSERT OR REPLACE INTO captions (content_key, signature, attributes, raw, description)"
            " VALUES (?, ?, ?, ?, ?)",
            [(digest, signature, json.dumps(c.attributes.to_dict()), c.raw, c.description) for digest, c in items])
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM captions").fetchone()[0]

    def close(self) -> None:
        self.files.close()
        self._db.close()
