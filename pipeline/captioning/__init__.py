"""Captioning backends behind one interface (see base.Captioner), chosen by `caption.backend`."""

from __future__ import annotations

from pipeline.captioning.base import Caption, CaptionFailure, Captioner, ImageToCaption
from pipeline.captioning.catalog import CatalogCaptioner
from pipeline.config import CaptionParams

__all__ = ["Caption", "CaptionFailure", "Captioner", "ImageToCaption", "build_captioner"]


def build_captioner(params: CaptionParams) -> Captioner:
    if params.backend == "catalog":
        return CatalogCaptioner()
    raise AssertionError(f"unvalidated caption backend {params.backend!r}")  # config restricts the choices
