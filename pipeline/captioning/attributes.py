"""The attribute schema every captioner fills in, and the sentence-level caption rendered from it.

One schema for all backends (a dataset's own tags, a shop catalogue's columns, an MLLM's answer) so that triplet
generation and the reference prompt never depend on which backend wrote the attributes. The closed vocabularies
double as the enums of an MLLM's structured-output JSON schema; a catalogue's columns with free names (gender,
usage, ...) are kept as named extra attributes, compared and phrased like the garment fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from pipeline.config import FASHIONIQ_CATEGORIES

CATEGORIES = FASHIONIQ_CATEGORIES  # the garments the schema, its MLLM prompt and the demo catalogue know
COLORS = (
    "black", "white", "grey", "red", "pink", "orange", "yellow", "green", "blue", "navy", "purple", "brown",
    "beige",
)
PATTERNS = ("solid", "striped", "dotted", "checked", "floral", "graphic")
PATTERN_NOUNS = {"striped": "stripes", "dotted": "dots", "checked": "checks", "floral": "flowers", "graphic": "print"}
SLEEVES = ("sleeveless", "short sleeves", "long sleeves")
NECKLINES = ("round neck", "v-neck", "square neck", "high neck")
# Ordered shortest to longest within each category, so "shorter"/"longer" can be derived from the index.
LENGTHS_BY_CATEGORY = {
    "dress": ("mini", "knee-length", "maxi"),
    "shirt": ("cropped", "hip-length", "tunic-length"),
    "toptee": ("cropped", "hip-length", "tunic-length"),
}
LENGTHS = tuple(dict.fromkeys(v for values in LENGTHS_BY_CATEGORY.values() for v in values))

# Fields that can differ between two garments of one category; used to pair images into generated triplets.
COMPARABLE_FIELDS = ("color", "pattern", "accent", "sleeves", "neckline", "length")

_NOUN = {"dress": "dress", "shirt": "shirt", "toptee": "top"}


@dataclass(frozen=True)
class Attributes:
    """Structured, attribute-aware description of one garment image."""

    category: str
    colors: tuple[str, ...] = ()
    pattern: str | None = None
    material: str | None = None
    sleeves: str | None = None
    neckline: str | None = None
    length: str | None = None
    fit: str | None = None
    details: tuple[str, ...] = field(default=())
    extra: tuple[tuple[str, str], ...] = ()  # named attributes outside the schema: (name, value), in column order

    @property
    def color(self) -> str | None:
        """The main colour (the first listed)."""
        return self.colors[0] if self.colors else None

    @property
    def accent(self) -> str | None:
        """The colour of the pattern; only meaningful on a patterned garment."""
        if self.pattern in (None, "solid") or len(self.colors) < 2:
            return None
        return self.colors[1]

    def value(self, name: str) -> str | None:
        """The value of one of COMPARABLE_FIELDS or of a named extra attribute (None where unknown)."""
        if name in COMPARABLE_FIELDS:
            return getattr(self, name)
        return dict(self.extra).get(name)

    def field_names(self) -> tuple[str, ...]:
        """Every field this garment can be compared on: the schema's, then its named extra attributes."""
        return COMPARABLE_FIELDS + tuple(name for name, _ in self.extra)

    def changed_fields(self, other: Attributes) -> list[str]:
        """The fields both garments have a value for and that differ: what a change from this garment to `other`
        can name (a field a captioner left empty is never claimed to have changed)."""
        names = dict.fromkeys(self.field_names() + other.field_names())
        return [name for name in names
                if self.value(name) is not None and other.value(name) is not None
                and self.value(name) != other.value(name)]

    def sentence(self) -> str:
        """Sentence-level, attribute-aware caption, e.g. 'a navy striped dress with white stripes, long sleeves,
        a v-neck and a knee-length cut'; empty when no attribute is known (an untagged image says nothing)."""
        if not (self.colors or self.pattern or self.material or self.sleeves or self.neckline or self.length
                or self.fit or self.details or self.extra):
            return ""
        head = " ".join(w for w in (self.color, self.material, _pattern_adjective(self.pattern),
                                    _NOUN.get(self.category, self.category.lower())) if w)
        parts: list[str] = []
        if self.accent:
            parts.append(f"{self.accent} {PATTERN_NOUNS[self.pattern]}" if self.pattern in PATTERN_NOUNS
                         else f"{self.accent} details")
        if self.sleeves:
            parts.append("no sleeves" if self.sleeves == "sleeveless" else self.sleeves)
        if self.neckline:
            parts.append(f"a {self.neckline}")
        if self.length:
            parts.append(f"a {self.length} cut")
        if self.fit:
            parts.append(f"a {self.fit} fit")
        parts.extend(f"{name} {value}" for name, value in self.extra)
        parts.extend(self.details)
        if not parts:
            return f"a {head}"
        tail = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"a {head} with {tail}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; `extra` appears only when there is some, so garment-only captions keep their layout."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}  # not asdict, which deep-copies every field
        data["colors"] = list(self.colors)
        data["details"] = list(self.details)
        extra = data.pop("extra")
        if extra:
            data["extra"] = dict(extra)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attributes:
        return cls(**{**data, "colors": tuple(data.get("colors") or ()), "details": tuple(data.get("details") or ()),
                      "extra": tuple((data.get("extra") or {}).items())})


def _pattern_adjective(pattern: str | None) -> str | None:
    return None if pattern in (None, "solid") else pattern


# A catalogue column whose name contains one of these words fills that schema field; other columns stay named extras.
_FIELD_OF_COLUMN = (("colour", "colors"), ("color", "colors"), ("pattern", "pattern"), ("sleeve", "sleeves"),
                    ("neck", "neckline"), ("length", "length"), ("material", "material"), ("fabric", "material"),
                    ("fit", "fit"))


def attributes_from_tags(category: str, tags: list[str]) -> Attributes:
    """Map an image's tags onto the schema.

    A plain word (FashionIQ's tags) is placed by vocabulary; words outside it become details. A named tag
    ("base colour: Navy Blue", a catalogue's column) fills the schema field its name points to (any value), or else
    stays a named extra attribute. Colours are kept in the order they are listed (the first is the main colour).
    """
    colors: list[str] = []
    fields: dict[str, str] = {}
    details: list[str] = []
    extra: list[tuple[str, str]] = []
    vocab = {"pattern": PATTERNS, "sleeves": SLEEVES, "neckline": NECKLINES, "length": LENGTHS}
    for raw in tags:
        name, separator, value = raw.partition(": ")
        if separator:
            value = value.strip().lower()
            field_name = next((f for word, f in _FIELD_OF_COLUMN if word in name.lower()), None)
            if not value:
                continue
            if field_name == "colors":
                colors.append(value)
            elif field_name and field_name not in fields:
                fields[field_name] = value
            else:
                extra.append((name.strip().lower(), value))
            continue
        word = raw.strip().lower()
        if not word:
            continue
        if word in COLORS:
            colors.append(word)
            continue
        for name, values in vocab.items():
            if word in values and name not in fields:
                fields[name] = word
                break
        else:
            details.append(word)
    return Attributes(category=category, colors=tuple(colors), details=tuple(details), extra=tuple(extra), **fields)
