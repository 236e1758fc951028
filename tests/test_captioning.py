from pathlib import Path

import pandas as pd
import pytest

from pipeline.captioning.base import Caption, CaptionFailure, ImageToCaption
from pipeline.captioning.cache import CaptionCache
from pipeline.captioning.caption import caption_images
from pipeline.captioning.catalog import CatalogCaptioner
from pipeline.data.fashioniq import FashionIQ


class CountingCaptioner(CatalogCaptioner):
    """The real catalog backend, counting how many images it was asked to caption (a test probe)."""

    def __init__(self, stop_after_batches: int | None = None):
        self.seen = 0
        self.batches = 0
        self.stop_after_batches = stop_after_batches

    def caption(self, batch: list[ImageToCaption]) -> list[Caption | CaptionFailure]:
        if self.stop_after_batches is not None and self.batches >= self.stop_after_batches:
            raise KeyboardInterrupt
        self.batches += 1
        self.seen += len(batch)
        return super().caption(batch)


def _images(root: Path):
    dataset = FashionIQ(root, ["dress", "shirt", "toptee"])
    return dataset.images("train"), dataset.tags("train")


def test_catalog_captions_are_attribute_aware(tiny_catalogue, tmp_path):
    images, tags = _images(tiny_catalogue)
    table, report = caption_images(images, tags, CatalogCaptioner(), CaptionCache(tmp_path / "c.sqlite"), 8)
    assert report["captioned"] == len(images) == len(table)
    assert report["untagged"] == 0
    first = table.iloc[0]
    assert first["caption"].startswith("a ") and any(w in first["caption"] for w in ("dress", "shirt", "top"))


def test_second_run_asks_the_backend_for_nothing(tiny_catalogue, tmp_path):
    images, tags = _images(tiny_catalogue)
    cache = CaptionCache(tmp_path / "c.sqlite")
    first, _ = caption_images(images, tags, CountingCaptioner(), cache, 8)
    again = CountingCaptioner()
    second, report = caption_images(images, tags, again, cache, 8)
    assert again.seen == 0 and report["cached"] == len(images)
    pd.testing.assert_frame_equal(first, second)


def test_interrupted_run_resumes_where_it_stopped(tiny_catalogue, tmp_path):
    images, tags = _images(tiny_catalogue)
    cache = CaptionCache(tmp_path / "c.sqlite")
    with pytest.raises(KeyboardInterrupt):
        caption_images(images, tags, CountingCaptioner(stop_after_batches=2), cache, 5)
    assert len(cache) == 10
    resumed = CountingCaptioner()
    _, report = caption_images(images, tags, resumed, cache, 5)
    assert resumed.seen == len(images) - 10 and report["cached"] == 10


def test_cache_key_includes_the_backend_signature(tiny_catalogue, tmp_path):
    images, tags = _images(tiny_catalogue)
    cache = CaptionCache(tmp_path / "c.sqlite")
    caption_images(images, tags, CatalogCaptioner(), cache, 8)

    class OtherPrompt(CountingCaptioner):
        prompt_version = "tags-v2"

    other = OtherPrompt()
    caption_images(images, tags, other, cache, 8)
    assert other.seen == len(images)


def test_corrupt_image_is_skipped_and_counted(tiny_catalogue, tmp_path):
    images, tags = _images(tiny_catalogue)
    broken = tmp_path / "broken.png"
    broken.write_bytes(Path(images.loc[0, "path"]).read_bytes()[:40])
    images.loc[0, "path"] = str(broken)
    table, report = caption_images(images, tags, CatalogCaptioner(), CaptionCache(tmp_path / "c.sqlite"), 8)
    assert report["corrupt"] == 1 and len(table) == len(images) - 1
    assert images.loc[0, "name"] not in set(table["name"])
    assert report["failures"][0]["reason"] == "image could not be decoded"


def test_edited_tags_are_captioned_again(tiny_catalogue, tmp_path):
    images, tags = _images(tiny_catalogue)
    cache = CaptionCache(tmp_path / "c.sqlite")
    caption_images(images, tags, CatalogCaptioner(), cache, 8)
    first = images.loc[0, "name"]
    edited = {**tags, first: ["purple", *tags[first][1:]]}
    probe = CountingCaptioner()
    table, _ = caption_images(images, edited, probe, cache, 8)
    assert probe.seen == 1
    assert table.loc[table["name"] == first, "caption"].item().startswith("a purple")
