"""What a file holds, named by the sha256 of its bytes: the key of every cache that must follow an image's content
rather than its name (captions, gallery features, the decoded-image store's resume records).

Hashing a catalogue of 400,000 photos reads every byte of it, which costs more than the work a run with 1,000 new
products has left to do. `FileDigests` remembers each file's digest beside its size and modification time (the
cheap signature DVC's own state uses too) in an SQLite table, so a repeated run reads only the files whose signature
changed.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm


def content_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_signature(path: str) -> tuple[int, int]:
    """(size, modification time in ns): what tells cheaply that a file may have changed; (-1, -1) if it is gone."""
    try:
        stat = os.stat(path)
    except OSError:
        return -1, -1
    return stat.st_size, stat.st_mtime_ns


def _read_digest(path: str) -> str:
    try:
        return content_digest(Path(path).read_bytes())
    except OSError:
        return ""


class FileDigests:
    """Content digests of files, remembered by (size, mtime) in the table `file_digests` of an SQLite file (a cache
    the digests serve, e.g. data/gallery/cache.sqlite; ":memory:" remembers nothing between runs)."""

    def __init__(self, path: str | Path):
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path))
        self._db.execute("CREATE TABLE IF NOT EXISTS file_digests (path TEXT PRIMARY KEY, size INTEGER, "
                         "mtime_ns INTEGER, digest TEXT)")
        self._db.commit()

    def of(self, paths: Sequence[str], desc: str = "hash") -> list[str]:
        """The digest of each path's content ("" for a file that cannot be read). Files whose size and modification
        time are those remembered are not read; the rest are read and hashed by a thread per core (hashlib and
        file reads release the GIL) and remembered."""
        known = {path: (size, mtime, digest) for path, size, mtime, digest
                 in self._db.execute("SELECT path, size, mtime_ns, digest FROM file_digests")}
        digests: list[str] = []
        unread: list[tuple[int, str, tuple[int, int]]] = []
        for i, path in enumerate(paths):
            signature = file_signature(path)
            remembered = known.get(path)
            if remembered is not None and remembered[:2] == signature:
                digests.append(remembered[2])
            else:
                digests.append("")
                if signature != (-1, -1):
                    unread.append((i, path, signature))
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            read = pool.map(_read_digest, [path for _, path, _ in unread], chunksize=64)
            fresh = []
            for (i, path, signature), digest in zip(unread, tqdm(read, total=len(unread), desc=desc, unit="file",
                                                                 mininterval=2, disable=not unread), strict=True):
                digests[i] = digest
                if digest:
                    fresh.append((path, *signature, digest))
        self._db.executemany("INSERT OR REPLACE INTO file_digests VALUES (?, ?, ?, ?)", fresh)
        self._db.commit()
        return digests

    def close(self) -> None:
        self._db.close()
