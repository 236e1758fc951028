"""The image store: every image decoded and fitted to the model's input size once (stage `decode`), so no later stage
or epoch opens a catalogue's own files again. Two formats, one reader:

    raw   pixels.npy, uint8 [N, 3, H, W] (a standard .npy): nothing to decode, 150 KB a photo at 224 px (338 KB
          at LLaVA's 336 px), so a million photos would need 150 to 340 GB of disk
    jpeg  images.bin, each image re-encoded at the input size (quality `store.quality`, no chroma subsampling, since
          colour is what fashion queries ask about most), with its offset and length in locations.npy: about a
          tenth of raw, decoded again when read, by threads on the CPU (Pillow releases the GIL) and by nvJPEG on a
          GPU (torchvision), so a loader is never one core's work

`store.format: auto` keeps raw while it takes under RAW_LIMIT bytes (the demo, a shop's first tens of thousands of
photos: decoding nothing is the fastest read there is) and re-encodes above, where disk, not decoding, is what runs
out. Beside either: index.parquet (path -> row; one row per image file, decodable files only) and store.json (the
preprocessing, the format, the files that could not be decoded).

Decoding runs in worker processes (a torch DataLoader), which also encode. It is resumable: rows go in order into a
partial directory beside the store, each row's file size, modification time, content digest and whether it decoded
in records.npy (a fixed-size array written in place, so a chunk's record costs the same at row 1,000 as at row
1,000,000), and the number done in progress.json after each chunk; an interrupted build picks up where it stopped,
and decodes again every file that changed meanwhile or could not be decoded.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
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
RAW_LIMIT = 4 << 30  # store.format auto: raw below this many bytes of pixels, jpeg from there
RECORD = np.dtype([("size", "<i8"), ("mtime", "<i8"), ("digest", "S64"), ("decoded", "?")])


def store_format(setting: str, images: int, shape: tuple[int, ...]) -> str:
    """The format `store.format` means for `images` images of `shape`: auto picks by the raw size."""
    if setting != "auto":
        return setting
    return "raw" if images * int(np.prod(shape)) < RAW_LIMIT else "jpeg"


def encode_jpeg(pixels: torch.Tensor, quality: int) -> bytes:
    """uint8 [3, H, W] as a JPEG file's bytes, every pixel's colour kept (4:4:4)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """uint8 [3, H, W] from a store's JPEG bytes (Pillow, as on every machine: the same pixels everywhere)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


def decode_file(path: str, loader: Loader) -> torch.Tensor | None:
    """uint8 [3, H, W], or None for a file Pillow cannot read."""
    image = open_rgb(path)
    return None if image is None else loader(image)


class _Files(torch.utils.data.Dataset):
    """Image files decoded (and, for a jpeg store, encoded again) in DataLoader workers, with the digest of the
    bytes decoded; an undecodable file comes back as blank pixels flagged False."""

    def __init__(self, paths: Sequence[str], loader: Loader, shape: tuple[int, ...], quality: int | None):
        self.paths, self.loader, self.shape, self.quality = paths, loader, shape, quality

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | bytes, bool, str]:
        try:
            data = Path(self.paths[i]).read_bytes()
        except OSError:
            return self._blank(), False, ""
        image = open_rgb(io.BytesIO(data))
        if image is None:
            return self._blank(), False, content_digest(data)
        pixels = self.loader(image)
        return (pixels if self.quality is None else encode_jpeg(pixels, self.quality)), True, content_digest(data)

    def _blank(self) -> torch.Tensor | bytes:
        return torch.zeros(self.shape, dtype=torch.uint8) if self.quality is None else b""


def _collate(items: list[tuple]) -> tuple[torch.Tensor | list[bytes], np.ndarray, list[str]]:
    images, ok, digests = zip(*items, strict=True)
    stacked = torch.stack(images) if isinstance(images[0], torch.Tensor) else list(images)
    return stacked, np.array(ok, dtype=bool), list(digests)


def _single_thread(_: int) -> None:
    torch.set_num_threads(1)  # the workers already use every core between them


def decode_files(paths: Sequence[str], loader: Loader, workers: int, desc: str = "decode",
                 batch_size: int | None = None, quality: int | None = None):
    """Yield (images, decodable [b], content digests [b]) batches of `paths` in order, b at most `batch_size`
    (BATCH if None), decoded by `workers` processes (0 = one per core). Images are uint8 [b, 3, H, W], or with a
    `quality` each one's JPEG bytes at the input size (b"" where it could not be decoded)."""
    shape = tuple(loader(Image.new("RGB", (8, 8))).shape)
    workers = workers or os.cpu_count() or 1
    batches = DataLoader(_Files(paths, loader, shape, quality), batch_size=batch_size or BATCH, num_workers=workers,
                         worker_init_fn=_single_thread, persistent_workers=False, collate_fn=_collate)
    with tqdm(total=len(paths), desc=desc, unit="img", mininterval=2) as progress:
        for images, ok, digests in batches:
            progress.update(len(ok))
            yield images, ok, digests


class _Partial:
    """A store being built: its pixels (raw) or encoded images (jpeg) and the per-row records, in `directory`."""

    def __init__(self, directory: Path, count: int, shape: tuple[int, ...], fmt: str, fresh: bool, end: int = 0):
        self.directory, self.format = directory, fmt
        if fresh:
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            np.lib.format.open_memmap(directory / "records.npy", mode="w+", dtype=RECORD, shape=(count,)).flush()
            if fmt == "raw":
                np.lib.format.open_memmap(directory / "pixels.npy", mode="w+", dtype=np.uint8,
                                          shape=(count, *shape)).flush()
            else:
                np.lib.format.open_memmap(directory / "locations.npy", mode="w+", dtype=np.int64,
                                          shape=(count, 2)).flush()
                (directory / "images.bin").write_bytes(b"")
        self.records = np.load(directory / "records.npy", mmap_mode="r+")
        if fmt == "raw":  # rows written with pwrite: no mapped page of the array counts in this process's memory
            self.pixels = open(directory / "pixels.npy", "r+b")
            self.data_offset, self.row_bytes = npy_data_offset(directory / "pixels.npy"), int(np.prod(shape))
        else:
            self.locations = np.load(directory / "locations.npy", mmap_mode="r+")
            self.images = open(directory / "images.bin", "r+b")
            self.images.truncate(end)  # bytes past the last recorded chunk belong to no row
            self.images.seek(end)

    def put(self, rows: Sequence[int], images: torch.Tensor | list[bytes], ok: np.ndarray, digests: list[str],
            paths: Sequence[str]) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if self.format == "raw":
            for row, pixels in zip(rows, images.numpy(), strict=True):
                os.pwrite(self.pixels.fileno(), pixels.tobytes(), self.data_offset + int(row) * self.row_bytes)
        else:
            for row, data in zip(rows, images, strict=True):
                self.locations[row] = (self.images.tell(), len(data))
                self.images.write(data)
        for row, decoded, digest in zip(rows, ok, digests, strict=True):
            self.records[row] = (*file_signature(paths[row]), digest.encode(), decoded)

    def flush(self) -> int:
        """Everything put so far on disk; returns the end of the encoded images (0 for raw)."""
        self.records.flush()
        if self.format == "raw":
            os.fsync(self.pixels.fileno())
            return 0
        self.locations.flush()
        self.images.flush()
        os.fsync(self.images.fileno())
        return self.images.tell()

    def close(self) -> None:
        (self.pixels if self.format == "raw" else self.images).close()
        del self.records


def _fingerprint(paths: Sequence[str], preprocessing: dict, fmt: str, quality: int) -> str:
    return hashlib.sha256(json.dumps([list(paths), preprocessing, fmt, quality if fmt == "jpeg" else None]
                                     ).encode()).hexdigest()


def build_store(paths: Sequence[str], loader: Loader, preprocessing: dict, out_dir: Path, workers: int = 0,
                fmt: str = "auto", quality: int = 90) -> dict[str, int | str]:
    """Decode `paths` (each once) into the store at `out_dir` in format `fmt` (raw, jpeg or auto), resuming a
    partial build of the same paths, preprocessing and format if one is there. Returns counts for the report."""
    paths = list(dict.fromkeys(paths))
    shape = tuple(loader(Image.new("RGB", (8, 8))).shape)
    fmt = store_format(fmt, len(paths), shape)
    partial_dir = out_dir.with_name(f".{out_dir.name}.partial")
    progress_path = partial_dir / "progress.json"
    fingerprint = _fingerprint(paths, preprocessing, fmt, quality)
    progress = json.loads(progress_path.read_text()) if progress_path.is_file() else {}
    fresh = progress.get("fingerprint") != fingerprint
    if fresh:
        progress = {"fingerprint": fingerprint, "done": 0, "end": 0}
    partial = _Partial(partial_dir, len(paths), shape, fmt, fresh, progress["end"])
    write_json(progress_path, progress)
    encoding = quality if fmt == "jpeg" else None
    resumed = progress["done"]
    stale = stale_rows(paths, partial.records[:resumed]) if resumed else []
    for position, (images, ok, digests) in _batches([paths[r] for r in stale], loader, workers, encoding,
                                                     "decode again"):
        partial.put(stale[position:position + len(ok)], images, ok, digests, paths)
    if stale:
        progress["end"] = partial.flush()
        write_json(progress_path, progress)
    for position, (images, ok, digests) in _batches(paths[resumed:], loader, workers, encoding, "decode"):
        row = resumed + position
        partial.put(range(row, row + len(ok)), images, ok, digests, paths)
        done = row + len(ok)
        if done // CHUNK > row // CHUNK or done == len(paths):
            progress.update(done=done, end=partial.flush())
            write_json(progress_path, progress)
    decoded = np.asarray(partial.records["decoded"]).copy()
    partial.close()
    return _finish(partial_dir, out_dir, paths, decoded, preprocessing, shape, fmt, quality,
                   {"resumed_from": resumed, "decoded_again": len(stale)})


def _batches(paths: list[str], loader: Loader, workers: int, quality: int | None, desc: str):
    """(position of the batch's first path, batch) over `decode_files`."""
    if not paths:
        return
    position = 0
    for batch in decode_files(paths, loader, workers, desc=desc, quality=quality):
        yield position, batch
        position += len(batch[1])


def _finish(partial: Path, out_dir: Path, paths: list[str], decoded: np.ndarray, preprocessing: dict,
            shape: tuple[int, ...], fmt: str, quality: int, counts: dict[str, int]) -> dict[str, int | str]:
    """The partial directory made a store and renamed into place."""
    rows = np.flatnonzero(decoded)
    failed = np.flatnonzero(~decoded)
    write_parquet(partial / "index.parquet", pa.table({"path": [paths[i] for i in rows], "row": rows}))
    write_json(partial / "store.json", {"preprocessing": preprocessing, "shape": [len(paths), *shape], "format": fmt,
                                        **({"quality": quality} if fmt == "jpeg" else {}),
                                        "undecodable": [paths[i] for i in failed]})
    (partial / "progress.json").unlink()
    (partial / "records.npy").unlink()
    size = sum(f.stat().st_size for f in partial.iterdir())
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(partial, out_dir)
    return {"images": len(rows), "undecodable_images": len(failed), "format": fmt, "bytes": size, **counts}


def stale_rows(paths: list[str], records: np.ndarray) -> list[int]:
    """Rows a resumed build must decode again: those that failed (the file may be fixed now) and those whose file
    changed since it was decoded (size or modification time differ, and so does the content digest)."""
    stale = []
    for row, (size, mtime, digest, decoded) in enumerate(records.tolist()):
        if decoded and file_signature(paths[row]) == (size, mtime):
            continue
        try:
            current = content_digest(Path(paths[row]).read_bytes())
        except OSError:
            current = ""
        if not decoded or current != digest.decode():
            stale.append(row)
    return stale


@cache
def _decoders() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="store-decode")


def npy_data_offset(path: Path) -> int:
    """Where a .npy file's array data starts (after its header)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)
        return f.tell()


@dataclass
class ImageStore:
    """A built store: `read(rows)` gives the images at those rows (`row_of[path]`). Rows are read with pread, not
    through a memory map, so a stage that reads every image once holds a batch of them, not the store: the pages
    read stay in the kernel's page cache, which gives them back under pressure, and out of the stage's own memory."""

    directory: Path
    row_of: dict[str, int]
    preprocessing: dict
    format: str
    shape: tuple[int, ...]            # one image: (3, H, W)
    file: int                         # descriptor of pixels.npy (raw) or images.bin (jpeg)
    data_offset: int                  # raw: where the array's rows start in pixels.npy
    locations: np.ndarray | None      # jpeg: [N, 2] offset and length of each row's image

    @classmethod
    def open(cls, directory: str | Path) -> ImageStore:
        directory = Path(directory)
        meta_path = directory / "store.json"
        if not meta_path.is_file():
            raise PipelineError(f"{meta_path} is missing; run the `decode` stage first (dvc repro).")
        meta = json.loads(meta_path.read_text())
        index = pd.read_parquet(directory / "index.parquet")
        fmt = meta.get("format", "raw")
        raw = fmt == "raw"
        data = directory / ("pixels.npy" if raw else "images.bin")
        return cls(directory, dict(zip(index["path"], index["row"].tolist(), strict=True)), meta["preprocessing"],
                   fmt, tuple(meta["shape"][1:]), os.open(data, os.O_RDONLY), npy_data_offset(data) if raw else 0,
                   None if raw else np.load(directory / "locations.npy"))

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

    def jpeg_bytes(self, row: int) -> bytes:
        """A jpeg store's encoded image at `row`."""
        offset, length = self.locations[row]
        return os.pread(self.file, int(length), int(offset))

    def read(self, rows: np.ndarray) -> torch.Tensor:
        """uint8 [len(rows), 3, H, W] on the CPU: raw rows read as they are, jpeg ones decoded by a thread per core."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape), dtype=np.uint8)
        if self.format == "raw":
            size = out[0].nbytes if len(out) else 0
            for i, row in enumerate(rows.tolist()):
                os.preadv(self.file, [out[i]], self.data_offset + row * size)
            return torch.from_numpy(out)

        def decode_into(i: int) -> None:
            out[i] = decode_jpeg(self.jpeg_bytes(int(rows[i])))

        list(_decoders().map(decode_into, range(len(rows))))
        return torch.from_numpy(out)

    def __del__(self) -> None:
        os.close(self.file)


class StoredPixels:
    """Some rows of an ImageStore served to `device` by position. On a GPU a raw store's rows move there whole when
    they fit in half its free memory (FashionIQ at 224 px is 11.6 GB), so a batch is an on-device gather with no
    host work, and a jpeg store's batch is decoded there by nvJPEG; otherwise each batch is read on the host (a
    gather from the memory map, or decoded by threads) and copied from pinned memory without blocking."""

    def __init__(self, store: ImageStore, rows: np.ndarray, device: torch.device):
        self.store, self.rows, self.device = store, np.asarray(rows, dtype=np.int64), device
        self.resident: torch.Tensor | None = None
        if device.type == "cuda" and store.format == "raw":
            size = len(self.rows) * int(np.prod(store.shape))
            if size < torch.cuda.mem_get_info(device)[0] / 2:
                self.resident = torch.empty((len(self.rows), *store.shape), dtype=torch.uint8, device=device)
                for start in range(0, len(self.rows), 4096):
                    chunk = store.read(self.rows[start:start + 4096])
                    self.resident[start:start + len(chunk)].copy_(chunk.pin_memory(), non_blocking=True)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: np.ndarray) -> torch.Tensor:
        """uint8 [len(positions), 3, H, W] on the device."""
        if self.resident is not None:
            return self.resident[torch.as_tensor(positions, device=self.device)]
        rows = self.rows[np.asarray(positions)]
        if self.device.type != "cuda":
            return self.store.read(rows)
        if self.store.format == "jpeg":
            return gpu_decode([self.store.jpeg_bytes(int(r)) for r in rows], self.device)
        return self.store.read(rows).pin_memory().to(self.device, non_blocking=True)


def gpu_decode(encoded: list[bytes], device: torch.device) -> torch.Tensor:
    """uint8 [b, 3, H, W] decoded on `device` by nvJPEG (torchvision's batched decoder)."""
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as nvjpeg

    images = nvjpeg([torch.frombuffer(bytearray(e), dtype=torch.uint8) for e in encoded], mode=ImageReadMode.RGB,
                    device=device)
    return torch.stack(images)
