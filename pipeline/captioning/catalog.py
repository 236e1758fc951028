"""The `catalog` backend: attribute-aware captions from the dataset's own attribute tags (no model).

The offline default: it needs no GPU and no weights, and on the demo catalogue its tags are exact, so it is the
upper bound that MLLM backends are compared against. On a shop catalogue (`data.source: catalog`) the tags are the
products table's columns, and the product title, when there is one, follows the attribute sentence.
"""

from __future__ import annotations

from pipeline.captioning.attributes import attributes_from_tags
from pipeline.captioning.base import Caption, Captioner, CaptionFailure, ImageToCaption
from pipeline.data import TITLE_TAG


class CatalogCaptioner(Captioner):
    backend = "catalog"
    model = "dataset-tags"
    prompt_version = "tags-v1"

    def input_key(self, item: ImageToCaption) -> str:
        """The captions are a function of the tags, so edited tags must not hit a stale cache entry."""
        return "|".join(item.tags)

    def caption(self, batch: list[ImageToCaption]) -> list[Caption | CaptionFailure]:
        results: list[Caption | CaptionFailure] = []
        for item in batch:
            titles = [tag.removeprefix(TITLE_TAG) for tag in item.tags if tag.startswith(TITLE_TAG)]
            named = [tag for tag in item.tags if not tag.startswith(TITLE_TAG)]
            attributes = attributes_from_tags(item.category, named)
            results.append(Caption(attributes, raw=" | ".join(item.tags), description=" ".join(titles)))
        return results
