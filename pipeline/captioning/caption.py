"""Caption every image of a dataset through the cache: resumable, batched, with progress and a report."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
from tqdm import tqdm

from pipeline.captioning.backends import build_captioner
from pipeline.captioning.base import Caption, Captioner, CaptionFailure, ImageToCaption
from pipeline.captioning.cache import CaptionCache, caption_key
from pipeline.config import Params
from pipeline.data import open_dataset
from pipeline.data.images import open_rgb
from pipeline.io import write_json, write_parquet
from pipeline.paths import Paths


def caption_images(
    images: pd.DataFrame, tags: dict[str, list[str]], captioner: Captioner, cache: CaptionCache, batch_size: int,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Captions for `images` (columns name, category, split, path), and counts for the stage report.

    Cached captions are reused; the rest go to the backend in batches, each batch committed to the cache before
    the next starts. Corrupt images and backend failures are skipped, counted and listed, never fatal.
    """
    signature = captioner.signature
    items = [ImageToCaption(name, category, Path(path), tuple(tags.get(name, ())))
             for name, category, path in zip(images["name"], images["category"], images["path"], strict=True)]
    contents = cache.files.of([str(item.path) for item in items])
    digests = [caption_key(content, captioner.input_key(item)) for content, item in zip(contents, items, strict=True)]
    cached = cache.get_many(digests, signature)
    counts: Counter[str] = Counter(images=len(images), cached=sum(d in cached for d in digests))

    todo = [i for i, d in enumerate(digests) if d not in cached]
    results: dict[str, Caption] = dict(cached)
    failures: list[tuple[str, str]] = []
    progress = tqdm(total=len(todo), desc=f"caption[{captioner.backend}]", unit="img", mininterval=2)
    for start in range(0, len(todo), batch_size):
        indices = todo[start:start + batch_size]
        batch: list[tuple[int, ImageToCaption]] = []
        for i in indices:
            if open_rgb(items[i].path) is None:
                counts["corrupt"] += 1
                failures.append((items[i].name, "image could not be decoded"))
                continue
            batch.append((i, items[i]))
        outputs = captioner.caption([item for _, item in batch]) if batch else []
        fresh: list[tuple[str, Caption]] = []
        for (i, item), output in zip(batch, outputs, strict=True):
            if isinstance(output, CaptionFailure):
                counts["failed"] += 1
                failures.append((item.name, output.reason))
            else:
                fresh.append((digests[i], output))
        cache.put_many(fresh, signature)
        results.update(fresh)
        counts["captioned"] += len(fresh)
        progress.update(len(indices))
    progress.close()

    keep = [i for i, d in enumerate(digests) if d in results]
    table = images.iloc[keep].reset_index(drop=True).copy()
    captions = [results[digests[i]] for i in keep]
    table["caption"] = [c.text for c in captions]
    table["attributes"] = [json.dumps(c.attributes.to_dict(), sort_keys=True) for c in captions]
    table["backend"] = captioner.backend
    table["model"] = captioner.model
    counts["untagged"] = sum(not tags.get(name) for name in table["name"])
    report = dict(counts)
    report["failures"] = [{"name": n, "reason": r} for n, r in failures[:100]]
    return table, report


def run(params: Params, paths: Paths) -> dict[str, object]:
    """The `caption` stage: every image of the splits the pipeline reads, captioned through the cache."""
    dataset = open_dataset(params.data, params.seed)
    images = pd.concat([dataset.images(split) for split in dataset.splits], ignore_index=True)
    tags = {name: words for split in dataset.splits for name, words in dataset.tags(split).items()}
    cache = CaptionCache(paths.caption_cache)
    started = time.perf_counter()
    try:
        with build_captioner(params.caption, log_dir=paths.captions_dir) as captioner:
            table, report = caption_images(images, tags, captioner, cache, params.caption.batch_size)
            backend = {"backend": captioner.backend, "model": captioner.model,
                       "prompt_version": captioner.prompt_version, "signature": captioner.signature,
                       "settings": captioner.settings(), "versions": captioner.versions(), **captioner.usage()}
    finally:
        cache.close()
    seconds = time.perf_counter() - started
    write_parquet(paths.captions, pa.Table.from_pandas(table, preserve_index=False))
    report = {**report, "missing": dataset.missing, "captioner": backend, "seconds": round(seconds, 1),
              "captioned_per_second": round(report.get("captioned", 0) / seconds, 2) if seconds else 0.0}
    write_json(paths.captions_dir / "report.json", report)
    return report
