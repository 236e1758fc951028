"""The captions table, the `caption` stage's output: one row per image and category (name, category, split, path,
caption, attributes, ...). Rows are looked up by (category, name), never by name alone: a FashionIQ image can be
listed under two categories, with a caption in each."""

from __future__ import annotations

import json

import pandas as pd

from pipeline.captioning.attributes import Attributes

ImageKey = tuple[str, str]  # (category, name)


def caption_lookup(captions: pd.DataFrame) -> dict[ImageKey, str]:
    """The sentence-level caption of every (category, name)."""
    return dict(zip(zip(captions["category"], captions["name"]), captions["caption"], strict=True))


def attributes_lookup(captions: pd.DataFrame) -> dict[ImageKey, Attributes]:
    """The captioned attributes of every (category, name)."""
    return {key: Attributes.from_dict(json.loads(value)) for key, value
            in zip(zip(captions["category"], captions["name"]), captions["attributes"], strict=True)}
