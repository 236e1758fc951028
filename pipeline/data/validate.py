"""The `validate` stage: the dataset `data.*` names, read whole through its reader before any stage works on it.

A wrong `data.root`, a missing annotation file or a malformed entry stops here with the project's one sentence,
before DVC hashes the dataset for the stages that read it (for a missing root DVC itself would only say
"[Errno 2] No such file or directory"). What the pipeline sees is written to data/dataset.json: images and annotated
pairs per split, and what the reader dropped.
"""

from __future__ import annotations

from pipeline.config import Params
from pipeline.data import open_dataset
from pipeline.io import write_json
from pipeline.paths import Paths


def run(params: Params, paths: Paths) -> dict:
    dataset = open_dataset(params.data, params.seed)
    images = {split: dataset.images(split) for split in dataset.splits}
    pairs = {split: len(dataset.pairs(split)) for split in dataset.splits}
    for split in dataset.splits:
        dataset.tags(split)
    summary = {"source": params.data.source, "root": params.data.root,
               "categories": sorted({c for table in images.values() for c in table["category"]}),
               "images": {split: len(table) for split, table in images.items()}, "pairs": pairs,
               "dropped": {key: int(n) for key, n in dataset.missing.items()}}
    write_json(paths.dataset_summary, summary)
    return summary


def summary_line(summary: dict) -> str:
    """The stage's printed line: what the pipeline will see, and every row the reader left out with its reason."""
    counts = [f"{split} {n} images / {summary['pairs'][split]} pairs" for split, n in summary["images"].items()]
    line = f"validate: {summary['source']} at {summary['root']}: " + ", ".join(counts)
    dropped = {reason: n for reason, n in summary["dropped"].items() if n}
    if dropped:
        line += "; left out: " + ", ".join(f"{n} ({reason})" for reason, n in sorted(dropped.items()))
    return line
