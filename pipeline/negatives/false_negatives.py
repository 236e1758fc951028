"""Which gallery images count as the same answer as a target: never mined as its negatives, never contrasted with
its query in stage 2's loss.

`negatives.false_negatives: target` treats only the target image itself so. `same_caption` also treats so every
image the captioner describes exactly as the target (an attribute twin): no query text can tell the two apart, so
pushing one away from a query that names the target's attributes only teaches the model to ignore them. Stage 1
already masks identical captions this way (pipeline/training/losses.py, `clip_loss`). An empty caption (an image
the captioner had no attributes for, e.g. CIRR under the catalog backend) describes nothing, so it makes no twins:
such an image is its own group under either rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.captioning.captions import caption_lookup
from pipeline.errors import PipelineError


def answer_groups(images: pd.DataFrame, rule: str, captions: pd.DataFrame) -> np.ndarray:
    """One integer per row of `images` (columns category, name), its answer group: rows with the same integer are
    interchangeable answers under `rule` (`negatives.false_negatives`). `captions` is the caption stage's table."""
    if rule == "target":
        return np.arange(len(images))
    caption_of = caption_lookup(captions)
    keys = list(zip(images["category"], images["name"]))
    missing = [name for category, name in keys if (category, name) not in caption_of]
    if missing:
        raise PipelineError(f"the captions table has no caption for image '{missing[0]}' ({len(missing)} missing), "
                            "which negatives.false_negatives: same_caption needs; re-run the caption stage.")
    texts = np.array([caption_of[key].strip() for key in keys], dtype=object)
    _, groups = np.unique(texts, return_inverse=True)
    groups = groups.astype(np.int64)
    empty = texts == ""
    groups[empty] = groups.max(initial=-1) + 1 + np.arange(int(empty.sum()))
    return groups
