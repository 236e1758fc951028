"""Pillow rendering of one garment from its attributes plus per-image nuisance.

Drawn at 4x the output size and downsampled, so thin parts (necklines, stripes) survive at 64 px. Nuisance
(position, scale, background, lighting, noise) is separate from the attributes, so equal attributes do not mean
equal pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.captioning.attributes import LENGTHS_BY_CATEGORY, Attributes

RGB = tuple[int, int, int]

COLOR_RGB: dict[str, RGB] = {
    "black": (25, 25, 28), "white": (245, 245, 242), "grey": (130, 130, 135), "red": (205, 30, 35),
    "pink": (245, 150, 190), "orange": (245, 135, 25), "yellow": (245, 215, 45), "green": (35, 145, 60),
    "blue": (45, 100, 220), "navy": (20, 32, 95), "purple": (120, 45, 165), "brown": (115, 70, 35),
    "beige": (215, 195, 155),
}

_CANVAS = 256  # drawing resolution; every coordinate below is in units of this canvas


@dataclass(frozen=True)
class Nuisance:
    """Everything about an image that is not a garment attribute."""

    dx: float
    dy: float
    scale: float
    background: RGB
    light_direction: float  # radians
    light_strength: float
    noise_seed: int

    @staticmethod
    def sample(rng: np.random.Generator) -> Nuisance:
        tint = rng.integers(200, 256, size=3)
        return Nuisance(
            dx=float(rng.uniform(-14, 14)), dy=float(rng.uniform(-10, 10)), scale=float(rng.uniform(0.82, 1.05)),
            background=(int(tint[0]), int(tint[1]), int(tint[2])),
            light_direction=float(rng.uniform(0, 2 * np.pi)), light_strength=float(rng.uniform(0.0, 0.22)),
            noise_seed=int(rng.integers(0, 2**31 - 1)),
        )


def render(attributes: Attributes, nuisance: Nuisance, size: int) -> Image.Image:
    """The garment as an RGB image of size x size pixels."""
    mask = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(mask)
    geometry = _Geometry(nuisance)
    _draw_silhouette(draw, attributes, geometry)
    _cut_neckline(draw, attributes.neckline or "round neck", geometry)

    fabric = _fabric(attributes, geometry)
    image = Image.new("RGB", (_CANVAS, _CANVAS), nuisance.background)
    outline = mask.filter(_EDGE_FILTER)
    image.paste(_shade(COLOR_RGB[attributes.color or "grey"], 0.6), mask=outline)
    image.paste(fabric, mask=mask)
    if attributes.category == "shirt":
        _draw_shirt_details(ImageDraw.Draw(image), attributes, geometry)

    image = image.resize((size, size), Image.Resampling.LANCZOS)
    return _light_and_noise(image, nuisance)


class _Geometry:
    """Maps the garment's own coordinates (a 100-unit tall figure centred at 0) onto the canvas."""

    def __init__(self, nuisance: Nuisance):
        self.unit = 2.0 * nuisance.scale
        self.cx = _CANVAS / 2 + nuisance.dx
        self.top = 22 + nuisance.dy

    def xy(self, x: float, y: float) -> tuple[float, float]:
        return self.cx + x * self.unit, self.top + y * self.unit

    def polygon(self, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [self.xy(x, y) for x, y in points]


def _hem_y(attributes: Attributes) -> float:
    lengths = LENGTHS_BY_CATEGORY[attributes.category]
    index = lengths.index(attributes.length) if attributes.length in lengths else 1
    if attributes.category == "dress":
        return (62.0, 80.0, 104.0)[index]
    return (38.0, 52.0, 68.0)[index]


def _draw_silhouette(draw: ImageDraw.ImageDraw, attributes: Attributes, g: _Geometry) -> None:
    hem = _hem_y(attributes)
    if attributes.category == "dress":
        waist = 36.0
        flare = 16 + 0.45 * (hem - waist)
        body = [(-21, 2), (21, 2), (15, waist), (flare, hem), (-flare, hem), (-15, waist)]
    elif attributes.category == "shirt":
        body = [(-24, 2), (24, 2), (23, hem), (-23, hem)]
    else:  # toptee: fitted waist, curved hem
        body = [(-22, 2), (22, 2), (17, 0.55 * hem), (20, hem), (0, hem + 3), (-20, hem), (-17, 0.55 * hem)]
    draw.polygon(g.polygon(body), fill=255)
    # Shoulder yoke so that every garment has straps at least.
    draw.polygon(g.polygon([(-21, 2), (-11, -2), (11, -2), (21, 2)]), fill=255)
    sleeves = attributes.sleeves
    for side in (-1, 1):
        if sleeves == "short sleeves":
            arm = [(21, 1), (33, 10), (27, 20), (19, 14)]
        elif sleeves == "long sleeves":
            arm = [(21, 1), (32, 8), (39, 52), (31, 54), (20, 16)]
        else:
            continue
        draw.polygon(g.polygon([(side * x, y) for x, y in arm]), fill=255)


def _cut_neckline(draw: ImageDraw.ImageDraw, neckline: str, g: _Geometry) -> None:
    if neckline == "v-neck":
        draw.polygon(g.polygon([(-10, -3), (10, -3), (0, 22)]), fill=0)
    elif neckline == "square neck":
        draw.rectangle([*g.xy(-10, -3), *g.xy(10, 11)], fill=0)
    elif neckline == "high neck":
        draw.rectangle([*g.xy(-8, -10), *g.xy(8, 2)], fill=255)
    else:  # round neck
        draw.ellipse([*g.xy(-10, -9), *g.xy(10, 9)], fill=0)


def _fabric(attributes: Attributes, g: _Geometry) -> Image.Image:
    """A canvas-sized texture: the main colour with the pattern in the accent colour."""
    main = COLOR_RGB[attributes.color or "grey"]
    accent = COLOR_RGB[attributes.accent] if attributes.accent else _shade(main, 0.5)
    fabric = Image.new("RGB", (_CANVAS, _CANVAS), main)
    draw = ImageDraw.Draw(fabric)
    u = g.unit
    pattern = attributes.pattern or "solid"
    if pattern == "striped":
        period = 9 * u
        for k in range(int(_CANVAS / period) + 2):
            y0 = g.top % period + (k - 1) * period
            draw.rectangle([0, y0, _CANVAS, y0 + 0.45 * period], fill=accent)
    elif pattern == "dotted":
        for x, y in _lattice(g, 9 * u):
            draw.ellipse([x - 2.2 * u, y - 2.2 * u, x + 2.2 * u, y + 2.2 * u], fill=accent)
    elif pattern == "checked":
        period = 12 * u
        for k in range(int(_CANVAS / period) + 2):
            offset = (k - 1) * period
            draw.rectangle([g.cx % period + offset, 0, g.cx % period + offset + 0.4 * period, _CANVAS], fill=accent)
            draw.rectangle([0, g.top % period + offset, _CANVAS, g.top % period + offset + 0.4 * period],
                           fill=accent)
    elif pattern == "floral":
        for x, y in _lattice(g, 16 * u):
            for angle in np.linspace(0, 2 * np.pi, 5, endpoint=False):
                px, py = x + 3.2 * u * np.cos(angle), y + 3.2 * u * np.sin(angle)
                draw.ellipse([px - 2.2 * u, py - 2.2 * u, px + 2.2 * u, py + 2.2 * u], fill=accent)
            draw.ellipse([x - 1.5 * u, y - 1.5 * u, x + 1.5 * u, y + 1.5 * u], fill=_shade(accent, 0.6))
    elif pattern == "graphic":
        cx, cy = g.xy(0, 20)
        r = 9 * u
        star = [(cx + (r if k % 2 == 0 else r / 2.3) * np.sin(k * np.pi / 5),
                 cy - (r if k % 2 == 0 else r / 2.3) * np.cos(k * np.pi / 5)) for k in range(10)]
        draw.polygon(star, fill=accent)
    return fabric


def _lattice(g: _Geometry, period: float) -> Iterator[tuple[float, float]]:
    """Centres of a staggered lattice over the canvas, anchored to the garment so the print moves with it."""
    for row in range(int(_CANVAS / period) + 2):
        for col in range(int(_CANVAS / period) + 2):
            yield col * period + (row % 2) * period / 2 + g.cx % period, row * period + g.top % period


def _draw_shirt_details(draw: ImageDraw.ImageDraw, attributes: Attributes, g: _Geometry) -> None:
    """A collar and a button placket, which tell a shirt from a top."""
    main = COLOR_RGB[attributes.color or "grey"]
    trim = _shade(main, 0.55) if sum(main) > 300 else _shade(main, 1.0, lift=110)
    draw.polygon(g.polygon([(-11, -3), (-2, 6), (-12, 8)]), fill=trim)
    draw.polygon(g.polygon([(11, -3), (2, 6), (12, 8)]), fill=trim)
    x0, y0 = g.xy(0, 8)
    _, y1 = g.xy(0, _hem_y(attributes) - 3)
    draw.line([(x0, y0), (x0, y1)], fill=trim, width=max(1, int(g.unit)))
    for y in np.arange(y0 + 4 * g.unit, y1, 9 * g.unit):
        draw.ellipse([x0 - 1.6 * g.unit, y - 1.6 * g.unit, x0 + 1.6 * g.unit, y + 1.6 * g.unit], fill=trim)


def _shade(rgb: RGB, factor: float, lift: int = 0) -> RGB:
    return tuple(int(min(255, c * factor + lift)) for c in rgb)  # type: ignore[return-value]


# Grows the silhouette mask; pasting the dark shade through it first leaves a thin outline around the garment.
_EDGE_FILTER = ImageFilter.MaxFilter(5)


def _light_and_noise(image: Image.Image, nuisance: Nuisance) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    size = pixels.shape[0]
    coords = (np.arange(size, dtype=np.float32) - size / 2) / size
    gradient = np.cos(nuisance.light_direction) * coords[None, :] + np.sin(nuisance.light_direction) * coords[:, None]
    pixels *= (1.0 + 2 * nuisance.light_strength * gradient)[..., None]
    noise = np.random.default_rng(nuisance.noise_seed).normal(0.0, 3.0, size=pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
