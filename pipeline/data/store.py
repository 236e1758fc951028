"""The decoded-image store: every image decoded and fitted to the model's input size once (stage `decode`), kept as
uint8, so no later stage or epoch decodes a JPEG again.

    data/image_store/pixels.npy     uint8 [N, 3, H, W], a standard .npy file, read memory-mapped
    data/image_store/index.parquet  path -> row; one row per image file (a file listed under two categories is
                                    stored once), decodable files only
    data/image_store/store.json     the preprocessing it was decoded with and the files that could not be decoded

Decoding runs in worker processes (a torch DataLoader; Pillow releases little of the GIL for resizing). It is
resumable: rows go in chunks into a partial directory beside the store, with the number done and each decoded file's
size, modification time and content digest recorded after each chunk, so an interrupted first decoding of a large
dataset picks up where it stopped, and decodes again every file that changed meanwhile or could not be decoded.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.data.digests import content_digest, file_signature
from pipeline.data.images import open_rgb
from pipeline.errors import PipelineError
from pipeline.io import write_json, write_parquet

Loader = Callable[[Image.Image], torch.Tensor]
BATCH = 64    # images per DataLoader batch unless the caller says
CHUNK = 2048  # images between progress records


def decode_file(path: str, loader: Loader) -> torch.Tensor | None:
    """uint8 [3, H, W], or None for a file Pillow cannot read."""
    image = open_rgb(path)
    return None if image is None else loader(image)


class _Files(torch.utils.data.Dataset):
    """Image files decoded in DataLoader workers, with the digest of the bytes decoded; an undecodable file comes
    back as zeros flagged False."""

    def __init__(self, paths: Sequence[str], loader: Loader, shape: tuple[int, ...]):
        self.paths, self.loader, self.shape = paths, loader, shape

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, bool, str]:
        try:
            data = Path(self.paths[i]).read_bytes()
        except OSError:
            return torch.zeros(self.shape, dtype=torch.uint8), False, ""
        image = open_rgb(io.BytesIO(data))
        if image is None:
            return torch.zeros(self.shape, dtype=torch.uint8), False, content_digest(data)
        return self.loader(image), True, content_digest(data)


def _single_thread(_: int) -> None:
    torch.set_num_threads(1)  # the workers already use every core between them


def decode_files(paths: Sequence[str], loader: Loader, workers: int, desc: str = "decode",
                 batch_size: int | None = None):
    """Yield (uint8 [b, 3, H, W], decodable [b], content digests [b]) batches of `paths` in order, b at most
    `batch_size` (BATCH if None), decoded by `workers` processes (0 = one per core)."""
    shape = tuple(loader(Image.new("RGB", (8, 8))).shape)
    workers = workers or os.cpu_count() or 1
    batches = DataLoader(_Files(paths, loader, shape), batch_size=batch_size or BATCH, num_workers=workers,
                         worker_init_fn=_single_thread, persistent_workers=False)
    with tqdm(total=len(paths), desc=desc, unit="img", mininterval=2) as progress:
        for pixels, ok, digests in batches:
            progress.update(len(ok))
            yield pixels, ok.numpy(), list(digests)


def _fingerprint(paths: Sequence[str], preprocessing: dict) -> str:
    return hashlib.sha256(json.dumps([list(paths), preprocessing]).encode()).hexdigest()


def build_store(paths: Sequence[str], loader: Loader, preprocessing: dict, out_dir: Path, workers: int = 0
                ) -> dict[str, int]:
    """Decode `paths` (each once) into the store at `out_dir`, resuming a partial build of the same paths and
    preprocessing if one is there. Returns counts for the stage report."""
    paths = list(dict.fromkeys(paths))
    shape = (len(paths), *loader(Image.new("RGB", (8, 8))).shape)
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    progress_path = partial / "progress.json"
    fingerprint = _fingerprint(paths, preprocessing)
    progress = json.loads(progress_path.read_text()) if progress_path.is_file() else {}
    if progress.get("fingerprint") != fingerprint or "files" not in progress:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        np.lib.format.open_memmap(partial / "pixels.npy", mode="w+", dtype=np.uint8, shape=shape).flush()
        progress = {"fingerprint": fingerprint, "done": 0, "failed": [], "files": []}
    resumed = progress["done"]
    pixels = np.load(partial / "pixels.npy", mmap_mode="r+")
    redecoded = _decode_again(stale_rows(paths, progress), paths, loader, workers, pixels, progress)
    if redecoded:
        pixels.flush()
        write_json(progress_path, progress)
    row = resumed
    for batch, ok, digests in decode_files(paths[resumed:], loader, workers):
        pixels[row:row + len(ok)] = batch.numpy()
        progress["failed"] += [row + i for i in np.flatnonzero(~ok).tolist()]
        progress["files"] += [[*file_signature(paths[row + i]), digest] for i, digest in enumerate(digests)]
        row += len(ok)
        if row // CHUNK > (row - len(ok)) // CHUNK or row == len(paths):
            pixels.flush()
            progress["done"] = row
            write_json(progress_path, progress)
    del pixels
    failed = set(progress["failed"])
    rows = [i for i in range(len(paths)) if i not in failed]
    write_parquet(partial / "index.parquet", pa.table({"path": [paths[i] for i in rows], "row": rows}))
    write_json(partial / "store.json", {"preprocessing": preprocessing, "shape": list(shape),
                                        "undecodable": [paths[i] for i in sorted(failed)]})
    progress_path.unlink()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(partial, out_dir)
    return {"images": len(rows), "undecodable_images": len(failed), "resumed_from": resumed,
            "decoded_again": redecoded}


def stale_rows(paths: list[str], progress: dict) -> list[int]:
    """Rows a resumed build must decode again: those that failed (the file may be fixed now) and those whose file
    changed since it was decoded (size or modification time differ, and so does the content digest)."""
    stale = set(progress["failed"])
    for row, (size, mtime, digest) in enumerate(progress["files"]):
        if row in stale or file_signature(paths[row]) == (size, mtime):
            continue
        try:
            current = content_digest(Path(paths[row]).read_bytes())
        except OSError:
            current = ""
        if current != digest:
            stale.add(row)
    return sorted(stale)


def _decode_again(rows: list[int], paths: list[str], loader: Loader, workers: int, pixels: np.ndarray,
                  progress: dict) -> int:
    """Decode `rows` again into `pixels` and bring their records in `progress` up to date."""
    failed = set(progress["failed"]) - set(rows)
    position = 0
    for batch, ok, digests in decode_files([paths[r] for r in rows], loader, workers, desc="decode again"):
        chosen = rows[position:position + len(ok)]
        pixels[chosen] = batch.numpy()
        failed |= {r for r, good in zip(chosen, ok, strict=True) if not good}
        for r, digest in zip(chosen, digests, strict=True):
            progress["files"][r] = [*file_signature(paths[r]), digest]
        position += len(ok)
    progress["failed"] = sorted(failed)
    return len(rows)


@dataclass
class ImageStore:
    """A built store, memory-mapped: `pixels[row]` is the image at `row_of[path]`."""

    directory: Path
    pixels: np.ndarray
    row_of: dict[str, int]
    preprocessing: dict

    @classmethod
    def open(cls, directory: str | Path) -> ImageStore:
        directory = Path(directory)
        meta = directory / "store.json"
        if not meta.is_file():
            raise PipelineError(f"{meta} is missing; run the `decode` stage first (dvc repro).")
        index = pd.read_parquet(directory / "index.parquet")
        return cls(directory, np.load(directory / "pixels.npy", mmap_mode="r"),
                   dict(zip(index["path"], index["row"].tolist(), strict=True)),
                   json.loads(meta.read_text())["preprocessing"])

    def check(self, preprocessing: dict, who: str) -> None:
        """Stop if the model `who` describes expects images prepared differently from how they were stored."""
        if preprocessing != self.preprocessing:
            raise PipelineError(f"{self.directory} was decoded for preprocessing {self.preprocessing}, but {who} "
                                f"expects {preprocessing}; run `dvc repro` so the `decode` stage matches the model.")

    def rows(self, paths: Sequence[str]) -> np.ndarray:
        """The store row of each path, -1 where the file could not be decoded (or is not in the store)."""
        return np.array([self.row_of.get(p, -1) for p in paths], dtype=np.int64)

    def select(self, table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, int]:
        """`table`'s rows (with a `path` column) that the store holds, their store rows, and how many it lacked."""
        rows = self.rows(table["path"].tolist())
        kept = rows >= 0
        return table[kept].reset_index(drop=True), rows[kept], int((~kept).sum())


class StoredPixels:
    """Some rows of an ImageStore served to `device` by position. On a GPU they move there whole when they fit in
    half its free memory (FashionIQ at 224 px is 11.6 GB), so a batch is an on-device gather with no host work;
    otherwise each batch is gathered from the memory map into pinned memory and copied without blocking."""

    def __init__(self, store: ImageStore, rows: np.ndarray, device: torch.device):
        self.pixels, self.rows, self.device = store.pixels, np.asarray(rows, dtype=np.int64), device
        self.resident: torch.Tensor | None = None
        if device.type == "cuda":
            size = len(self.rows) * int(np.prod(self.pixels.shape[1:]))
            if size < torch.cuda.mem_get_info(device)[0] / 2:
                self.resident = torch.empty((len(self.rows), *self.pixels.shape[1:]), dtype=torch.uint8,
                                            device=device)
                for start in range(0, len(self.rows), 4096):
                    chunk = torch.from_numpy(self.pixels[self.rows[start:start + 4096]])
                    self.resident[start:start + len(chunk)].copy_(chunk.pin_memory(), non_blocking=True)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: np.ndarray) -> torch.Tensor:
        """uint8 [len(positions), 3, H, W] on the device."""
        if self.resident is not None:
            return self.resident[torch.as_tensor(positions, device=self.device)]
        batch = torch.from_numpy(self.pixels[self.rows[np.asarray(positions)]])
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch
