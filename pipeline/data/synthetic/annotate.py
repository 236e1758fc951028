"""Relative captions in FashionIQ's style for a reference -> target pair: the synthetic stand-in for annotators.

Each pair gets two captions, as in FashionIQ; together they describe every changed attribute, each alone may
describe only part of the change. Wording varies (synonyms, comparatives such as "darker" or "shorter sleeves",
negations such as "no pattern"), so a model must read the text rather than match a fixed template.
"""

from __future__ import annotations

import numpy as np

from pipeline.captioning.attributes import LENGTHS_BY_CATEGORY, PATTERN_NOUNS, Attributes
from pipeline.data.synthetic.render import COLOR_RGB

_PATTERN_PHRASES = {
    "striped": ("is striped", "has stripes", "with stripes"),
    "dotted": ("has polka dots", "is dotted", "with dots"),
    "checked": ("is checkered", "has a plaid pattern", "with checks"),
    "floral": ("has a floral print", "is floral", "with flowers"),
    "graphic": ("has a graphic print", "has a star on the front", "with a graphic"),
}
_SLEEVE_PHRASES = {
    "sleeveless": ("is sleeveless", "has no sleeves", "without sleeves"),
    "short sleeves": ("has short sleeves", "is short sleeved", "with short sleeves"),
    "long sleeves": ("has long sleeves", "is long sleeved", "with long sleeves"),
}
_NECK_PHRASES = {
    "round neck": ("has a round neck", "has a crew neckline", "with a round neckline"),
    "v-neck": ("has a v-neck", "has a v neckline", "with a v-neck"),
    "square neck": ("has a square neck", "has a square neckline", "with a square neckline"),
    "high neck": ("has a high neck", "is a turtleneck", "with a high collar"),
}
_SLEEVE_ORDER = ("sleeveless", "short sleeves", "long sleeves")


def _luminance(color: str) -> float:
    r, g, b = COLOR_RGB[color]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def phrase(field: str, ref: Attributes, tgt: Attributes, rng: np.random.Generator) -> str:
    """One way of saying how `field` changes from ref to tgt."""
    if field == "color":
        new, old = tgt.color, ref.color
        options = [f"is {new}", f"is in {new}", f"{new} instead of {old}", f"is {new} and not {old}",
                   f"{new} colored"]
        delta = _luminance(new) - _luminance(old)
        if delta < -40:
            options.append(f"is darker, {new}")
        elif delta > 40:
            options.append(f"is lighter and {new}")
        return _pick(rng, options)
    if field == "pattern":
        if tgt.pattern == "solid":
            return _pick(rng, ("has no pattern", "is solid colored", "is plain", f"is not {ref.pattern}"))
        options = list(_PATTERN_PHRASES[tgt.pattern])
        if tgt.accent != ref.accent:
            options.append(f"has {tgt.accent} {PATTERN_NOUNS[tgt.pattern]}")
        if ref.pattern != "solid":
            options.append(f"{tgt.pattern} instead of {ref.pattern}")
        return _pick(rng, options)
    if field == "accent":
        if tgt.accent is None:
            return _pick(rng, ("has no pattern", "is plain"))
        noun = PATTERN_NOUNS[tgt.pattern]
        return _pick(rng, (f"has {tgt.accent} {noun}", f"with {tgt.accent} {noun}", f"{noun} are {tgt.accent}"))
    if field == "sleeves":
        options = list(_SLEEVE_PHRASES[tgt.sleeves])
        if tgt.sleeves != "sleeveless" and ref.sleeves is not None:
            longer = _SLEEVE_ORDER.index(tgt.sleeves) > _SLEEVE_ORDER.index(ref.sleeves)
            options.append("has longer sleeves" if longer else "has shorter sleeves")
        return _pick(rng, options)
    if field == "neckline":
        return _pick(rng, _NECK_PHRASES[tgt.neckline])
    if field == "length":
        lengths = LENGTHS_BY_CATEGORY[tgt.category]
        longer = lengths.index(tgt.length) > lengths.index(ref.length)
        noun = "dress" if tgt.category == "dress" else "top"
        options = [f"is {tgt.length}", f"is a {tgt.length} {noun}", f"is {'longer' if longer else 'shorter'}"]
        return _pick(rng, options)
    raise ValueError(f"unknown attribute field {field!r}")


def relative_captions(ref: Attributes, tgt: Attributes, rng: np.random.Generator) -> list[str]:
    """Two FashionIQ-style captions that together describe every attribute that differs."""
    changed = ref.changed_fields(tgt)
    fields = [f for f in changed if not (f == "accent" and "pattern" in changed)]  # a new pattern names its colour
    if not fields:
        raise ValueError("reference and target have the same attributes")
    order = [fields[i] for i in rng.permutation(len(fields))]
    if len(order) == 1:
        first = phrase(order[0], ref, tgt, rng)
        second = first
        for _ in range(8):  # a second annotator words the same change differently when the phrasebook allows
            if second != first:
                break
            second = phrase(order[0], ref, tgt, rng)
        return [first, second]
    cut = int(rng.integers(1, len(order)))
    groups = (order[:cut], order[cut:])
    captions = []
    for group in groups:
        phrases = [phrase(f, ref, tgt, rng) for f in group]
        captions.append(" and ".join(phrases))
    return captions
