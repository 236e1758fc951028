"""The `catalog` backend: attribute-aware captions from the dataset's own attribute tags (no model).

The offline default: it needs no GPU and no weights, and on the demo catalogue its tags are exact, so it is the
upper bound that MLLM backends are compared against.
"""

from __future__ import annotations

from pipeline.captioning.attributes import Attributes, attributes_from_tags
from pipeline.captioning.base import Caption, Captioner, CaptionFailure, ImageToCaption


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
            attributes: Attributes = attributes_from_tags(item.category, list(item.tags))
            results.append(Caption(attributes, raw=" | ".join(item.tags)))
        return results
