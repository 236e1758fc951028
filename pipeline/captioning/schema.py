"""What an MLLM is asked for: a fixed JSON schema of garment attributes, the prompt, and the parser of its answer.

One pydantic model is the single source of truth: its JSON schema goes to vLLM's structured output
(`response_format` json_schema), so a server-side grammar keeps the answer inside the closed vocabularies, and the
same model validates whatever comes back (a backend without grammar-constrained decoding, or a truncated answer),
so the cache only ever holds schema-valid attributes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.captioning.attributes import CATEGORIES, COLORS, LENGTHS, NECKLINES, PATTERNS, SLEEVES, Attributes

MATERIALS = ("cotton", "denim", "lace", "leather", "silk", "satin", "chiffon", "knit", "jersey", "linen", "wool",
             "velvet", "sequined", "polyester")
FITS = ("slim", "regular", "loose", "oversized")


class _Strict(BaseModel):
    # Every field required (nullable where a photo may not show it): vLLM's strict json_schema mode wants that.
    model_config = ConfigDict(extra="forbid")


class GarmentDescription(_Strict):
    category: Literal[CATEGORIES]  # type: ignore[valid-type]
    colors: list[Literal[COLORS]] = Field(min_length=1, max_length=3)  # type: ignore[valid-type]
    pattern: Literal[PATTERNS]  # type: ignore[valid-type]
    material: Literal[MATERIALS] | None  # type: ignore[valid-type]
    sleeves: Literal[SLEEVES] | None  # type: ignore[valid-type]
    neckline: Literal[NECKLINES] | None  # type: ignore[valid-type]
    length: Literal[LENGTHS] | None  # type: ignore[valid-type]
    fit: Literal[FITS] | None  # type: ignore[valid-type]
    details: list[Annotated[str, Field(max_length=40)]] = Field(max_length=3)


class GarmentDescriptionWithText(GarmentDescription):
    description: Annotated[str, Field(max_length=300)]


INSTRUCTIONS = (
    "You are cataloguing a fashion product photo. Describe the garment as JSON with exactly these fields: "
    "category ({categories}); colors (the main colour first, at most three, from: {colors}); pattern ({patterns}); "
    "material ({materials}, or null if unclear); sleeves ({sleeves}, or null); neckline ({necklines}, or null); "
    "length ({lengths}, or null); fit ({fits}, or null); details (up to three short notable details such as "
    "\"ruffled hem\" or \"front buttons\")."
)
FREE_TEXT = " Also add description: one sentence describing the garment as a shopper would."


def _options(values: tuple[str, ...]) -> str:
    return ", ".join(values)


def prompt(free_text: bool) -> str:
    text = INSTRUCTIONS.format(categories=_options(CATEGORIES), colors=_options(COLORS),
                               patterns=_options(PATTERNS), materials=_options(MATERIALS),
                               sleeves=_options(SLEEVES), necklines=_options(NECKLINES),
                               lengths=_options(LENGTHS), fits=_options(FITS))
    return text + (FREE_TEXT if free_text else "")


def json_schema(free_text: bool) -> dict:
    return (GarmentDescriptionWithText if free_text else GarmentDescription).model_json_schema()


def prompt_version(free_text: bool) -> str:
    """A digest of the exact prompt and schema: editing either invalidates cached captions by itself."""
    payload = json.dumps({"prompt": prompt(free_text), "schema": json_schema(free_text)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


class MalformedOutput(ValueError):
    """The model's answer is not valid JSON of the schema; the message says why, in a few words."""


def parse_answer(text: str, category: str, free_text: bool) -> tuple[Attributes, str]:
    """The attributes (and free-text description, or "") in an MLLM's JSON answer.

    The dataset's own category wins over the model's guess: it is ground truth (FashionIQ files images by
    category), and triplets are formed within a category.
    """
    schema = GarmentDescriptionWithText if free_text else GarmentDescription
    try:
        answer = schema.model_validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        if first["type"] == "json_invalid":
            raise MalformedOutput(f"not valid JSON ({first['msg']})") from None
        raise MalformedOutput(f"{where}: {first['msg']}") from None
    attributes = Attributes(
        category=category, colors=tuple(dict.fromkeys(answer.colors)), pattern=answer.pattern,
        material=answer.material, sleeves=answer.sleeves, neckline=answer.neckline, length=answer.length,
        fit=answer.fit, details=tuple(d.strip() for d in answer.details if d.strip()))
    return attributes, getattr(answer, "description", "").strip()
