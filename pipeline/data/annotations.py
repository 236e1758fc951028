"""Annotation files read through schemas: a wrong shape or type stops with one sentence naming the file, the entry
and the field, so no malformed entry is ever turned into a query (a string where a list of captions belongs would
otherwise be split into one-letter captions).

The schemas describe the files as their authors publish them (FashionIQ's captions, image splits and attribute
tags; CIRR's captions and image splits) and a catalogue's optional triplets table. Keys a schema does not name
are ignored (CIRR ships `target_soft` and ranks the pipeline does not read).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from pipeline.errors import PipelineError

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class FashionIQPair(_Entry):
    """One entry of FashionIQ's captions/cap.<category>.<split>.json: two annotators' relative captions."""

    candidate: Name
    target: Name
    captions: Annotated[list[str], Field(min_length=1, max_length=2)]


class CIRRImageSet(_Entry):
    members: Annotated[list[Name], Field(min_length=1)]


class CIRRPair(_Entry):
    """One entry of CIRR's captions/cap.rc2.<split>.json; test1's have no target_hard."""

    pairid: int
    reference: Name
    caption: str
    img_set: CIRRImageSet
    target_hard: Name | None = None


class CatalogTriplet(_Entry):
    """One row of a catalogue's optional triplets table (CSV cells are strings; an empty optional cell is "")."""

    reference: Name
    target: Name
    text1: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    text2: str = ""
    split: Literal["train", "val", ""] = ""


FASHIONIQ_CAPTIONS = TypeAdapter(list[FashionIQPair])
FASHIONIQ_IMAGE_SPLIT = TypeAdapter(list[Name])
FASHIONIQ_TAGS = TypeAdapter(dict[str, list[list[str]]])
CIRR_CAPTIONS = TypeAdapter(list[CIRRPair])
CIRR_IMAGE_SPLIT = TypeAdapter(dict[str, Name])
CATALOG_TRIPLETS = TypeAdapter(list[CatalogTriplet])

_EXPECTED = {FASHIONIQ_CAPTIONS: "a list of {candidate, target, captions} entries",
             FASHIONIQ_IMAGE_SPLIT: "a list of image names", FASHIONIQ_TAGS: "a mapping of image names to tag lists",
             CIRR_CAPTIONS: "a list of {pairid, reference, caption, img_set, target_hard} entries",
             CIRR_IMAGE_SPLIT: "a mapping of image names to relative paths",
             CATALOG_TRIPLETS: "rows with reference, target and text1"}


def load_annotation(path: Path, layout: str, needed_because: str) -> object:
    """The parsed JSON at `path`; a missing or unreadable file stops with one sentence naming it."""
    if not path.is_file():
        raise PipelineError(f"{path} is missing; {needed_because}, so the layout needs this file ({layout}).")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" ({exc.msg} at line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise PipelineError(f"{path} is not valid JSON{where}.") from None


def parse_annotation(data: object, schema: TypeAdapter, path: Path) -> Any:
    """`data` (read from `path`) checked against `schema`; the first problem as one sentence."""
    try:
        return schema.validate_python(data)
    except ValidationError as error:
        raise PipelineError(_sentence(error, schema, path)) from None


def _sentence(error: ValidationError, schema: TypeAdapter, path: Path) -> str:
    first = error.errors()[0]
    location = list(first["loc"])
    if not location:
        return f"{path} must be {_EXPECTED[schema]}, not {_kind(first.get('input'))}."
    entry = location.pop(0)
    entry_name = f"entry {entry}" if isinstance(entry, int) else f"entry {str(entry)!r}"
    if schema is CATALOG_TRIPLETS and isinstance(entry, int):
        entry_name = f"row {entry + 2}"  # the header is row 1
    field = ".".join(str(part) for part in location)
    what = f"field '{field}'" if field else "the entry"
    message = first["msg"].removeprefix("Value error, ")
    return (f"{path} {entry_name}: {what} is not allowed: {message[0].lower()}{message[1:]} (got "
            f"{_shown(first.get('input'))}).")


def _kind(value: object) -> str:
    """A JSON value's kind, in words."""
    kinds = {bool: "true or false", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "a mapping"}
    return "nothing (null)" if value is None else kinds.get(type(value), type(value).__name__)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
