"""A picture of what the model retrieves: a few validation queries, each a row of reference image, modification
text and the top 5 with the target outlined, successes and failures alike, chosen the same way on every run.

`evaluate` writes it as plots/retrievals.png (an image plot in dvc.yaml, so `dvc plots show` and `fashion-cir plots`
show it, and `dvc plots diff` compares it between runs).
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from pipeline.data.images import open_rgb
from pipeline.io import atomic_path

THUMB = 80
TEXT_WIDTH = 240
PAD = 8
TOP = 5
TARGET = (22, 163, 74)      # green: the right answer
REFERENCE = (37, 99, 235)   # blue: the query's reference image


def chosen_queries(rankings: pd.DataFrame, successes: int = 3, failures: int = 3) -> pd.DataFrame:
    """Queries whose target is first and queries whose target is outside the top 5, in an order fixed by their ids
    (a hash, so it does not follow the dataset's own order), failures first."""
    order = rankings.assign(key=[hashlib.sha256(t.encode()).hexdigest() for t in rankings["triplet_id"]])
    order = order.sort_values("key")
    missed = order[(order["target_rank"] == 0) | (order["target_rank"] > TOP)].head(failures)
    found = order[order["target_rank"] == 1].head(successes)
    return pd.concat([missed, found], ignore_index=True)


def _thumbnail(path: str | None) -> Image.Image:
    image = open_rgb(path) if path else None
    if image is None:
        return Image.new("RGB", (THUMB, THUMB), (230, 230, 230))
    scale = THUMB / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (THUMB, THUMB), (255, 255, 255))
    canvas.paste(image, ((THUMB - image.width) // 2, (THUMB - image.height) // 2))
    return canvas


def retrieval_grid(rankings: pd.DataFrame, path_of: dict[tuple[str, str], str]) -> Image.Image:
    """One row per query of `rankings` (the `top_results` table): reference | text | top 5, target outlined."""
    font = ImageFont.load_default(size=13)
    row_height = THUMB + 3 * PAD + 6
    header = 24
    width = PAD + THUMB + PAD + TEXT_WIDTH + (THUMB + PAD) * TOP + PAD
    grid = Image.new("RGB", (width, header + max(1, len(rankings)) * row_height + PAD), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    draw.text((PAD, PAD), "reference (blue)   modification text   top 5, the target outlined in green",
              fill=(90, 90, 90), font=font)
    for i, query in enumerate(rankings.itertuples()):
        y = header + PAD + i * row_height
        reference = _thumbnail(path_of.get((query.category, query.reference)))
        grid.paste(reference, (PAD, y))
        draw.rectangle([PAD - 2, y - 2, PAD + THUMB + 1, y + THUMB + 1], outline=REFERENCE, width=2)
        rank = f"target at rank {query.target_rank}" if query.target_rank else "target not ranked"
        lines = textwrap.wrap(f'"{query.caption1}"' + (f' / "{query.caption2}"' if query.caption2 else ""), 32)
        draw.multiline_text((2 * PAD + THUMB, y), "\n".join([*lines[:5], "", f"{query.category}: {rank}"]),
                            fill=(20, 20, 20), font=font, spacing=4)
        for j, name in enumerate(list(query.top)[:TOP]):
            x = 3 * PAD + THUMB + TEXT_WIDTH + j * (THUMB + PAD)
            grid.paste(_thumbnail(path_of.get((query.category, name))), (x, y))
            if name == query.target:
                draw.rectangle([x - 3, y - 3, x + THUMB + 2, y + THUMB + 2], outline=TARGET, width=4)
            draw.text((x, y + THUMB + 2), f"#{j + 1}", fill=(90, 90, 90), font=font)
    return grid


def write_retrieval_grid(path: Path, rankings: pd.DataFrame, captions: pd.DataFrame) -> None:
    """The picture of `chosen_queries(rankings)`, images found through the captions table's paths."""
    path_of = dict(zip(zip(captions["category"], captions["name"]), captions["path"], strict=True))
    with atomic_path(path) as tmp:
        grid = retrieval_grid(chosen_queries(rankings), path_of)
        grid.quantize(colors=128).save(tmp, format="PNG", optimize=True)  # small enough to commit
