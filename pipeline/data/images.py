"""Opening one image file. Pillow raises many exception types for a broken file (truncated, not an image, an
unknown format); every one of them means "skip this image, count it", never "stop the stage"."""

from __future__ import annotations

from pathlib import Path
from typing import IO

from PIL import Image


def open_rgb(path: str | Path | IO[bytes]) -> Image.Image | None:
    """The whole image (a file, or bytes in a file object) decoded as RGB, or None if Pillow cannot read it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception:
        return None
