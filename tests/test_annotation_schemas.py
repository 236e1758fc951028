"""Malformed annotation files never become queries: each one stops with one sentence naming the file, the entry and
the field. The fuzz tests feed a few hundred generated malformed variants of valid FashionIQ, CIRR and catalogue
entries (a field with a value of the wrong type or shape, a required field gone, an entry or the whole file of the
wrong kind) and require a PipelineError every time: never a traceback, never an accepted row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.data.annotations import (
    CATALOG_TRIPLETS,
    CIRR_CAPTIONS,
    CIRR_IMAGE_SPLIT,
    FASHIONIQ_CAPTIONS,
    FASHIONIQ_IMAGE_SPLIT,
    parse_annotation,
)
from pipeline.data.fashioniq import FashionIQ
from pipeline.errors import PipelineError

PATH = Path("captions/cap.dress.val.json")
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=6)


def _name(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _names(value: object) -> bool:
    return isinstance(value, list) and len(value) >= 1 and all(_name(v) for v in value)


FASHIONIQ_ENTRY = {"candidate": "B001", "target": "B002", "captions": ["is red", "has long sleeves"]}
FASHIONIQ_FIELDS = {"candidate": _name, "target": _name,
                    "captions": lambda v: isinstance(v, list) and 1 <= len(v) <= 2 and all(isinstance(c, str)
                                                                                         for c in v)}
CIRR_ENTRY = {"pairid": 7, "reference": "dev-1-0-img0", "target_hard": "dev-2-1-img1", "caption": "has a dog",
              "img_set": {"id": 3, "members": ["dev-1-0-img0", "dev-2-1-img1"]}, "target_soft": {}}
CIRR_FIELDS = {"pairid": lambda v: isinstance(v, int) and not isinstance(v, bool), "reference": _name,
               "caption": lambda v: isinstance(v, str),
               "img_set": lambda v: isinstance(v, dict) and _names(v.get("members")),
               "target_hard": lambda v: v is None or _name(v)}
CATALOG_ROW = {"reference": "1580", "target": "1584", "text1": "is white", "text2": "", "split": "train"}
CATALOG_FIELDS = {"reference": _name, "target": _name, "text1": _name, "text2": lambda v: isinstance(v, str),
                  "split": lambda v: v in ("train", "val", "")}
REQUIRED = {id(FASHIONIQ_FIELDS): ("candidate", "target", "captions"),
            id(CIRR_FIELDS): ("pairid", "reference", "caption", "img_set"),
            id(CATALOG_FIELDS): ("reference", "target", "text1")}


@st.composite
def malformed(draw: st.DrawFn, entry: dict, fields: dict) -> object:
    """A file of two entries, the valid one and a broken copy (or the whole file broken)."""
    kind = draw(st.sampled_from(["wrong value", "missing field", "entry", "file"]))
    broken = dict(entry)
    if kind == "wrong value":
        field = draw(st.sampled_from(sorted(fields)))
        broken[field] = draw(JSON.filter(lambda v: not fields[field](v)))
    elif kind == "missing field":
        del broken[draw(st.sampled_from(REQUIRED[id(fields)]))]
    elif kind == "entry":
        broken = draw(JSON.filter(lambda v: not isinstance(v, dict)))
    else:
        return draw(JSON.filter(lambda v: not isinstance(v, list)))
    return [entry, broken]


def _refused(data: object, schema) -> str:
    with pytest.raises(PipelineError) as error:
        parse_annotation(data, schema, PATH)
    message = str(error.value)
    assert str(PATH) in message and "\n" not in message
    return message


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(malformed(FASHIONIQ_ENTRY, FASHIONIQ_FIELDS))
def test_malformed_fashioniq_captions_are_refused(data: object):
    _refused(data, FASHIONIQ_CAPTIONS)


@FUZZ
@given(malformed(CIRR_ENTRY, CIRR_FIELDS))
def test_malformed_cirr_captions_are_refused(data: object):
    _refused(data, CIRR_CAPTIONS)


@FUZZ
@given(malformed(CATALOG_ROW, CATALOG_FIELDS))
def test_malformed_catalogue_triplets_are_refused(data: object):
    _refused(data, CATALOG_TRIPLETS)


@settings(max_examples=60, deadline=None)
@given(JSON.filter(lambda v: not (isinstance(v, list) and all(_name(x) for x in v))))
def test_malformed_image_splits_are_refused(data: object):
    _refused(data, FASHIONIQ_IMAGE_SPLIT)


def test_valid_entries_pass_and_the_sentence_names_entry_and_field():
    assert parse_annotation([FASHIONIQ_ENTRY], FASHIONIQ_CAPTIONS, PATH)[0].captions == ["is red", "has long sleeves"]
    assert parse_annotation([CIRR_ENTRY], CIRR_CAPTIONS, PATH)[0].img_set.members[1] == "dev-2-1-img1"
    assert parse_annotation({"a": "./dev/a.png"}, CIRR_IMAGE_SPLIT, PATH) == {"a": "./dev/a.png"}
    message = _refused([FASHIONIQ_ENTRY, {**FASHIONIQ_ENTRY, "captions": "is red"}], FASHIONIQ_CAPTIONS)
    assert message.startswith(f"{PATH} entry 1: field 'captions' is not allowed") and "'is red'" in message
    assert _refused(5, FASHIONIQ_CAPTIONS) == f"{PATH} must be a list of {{candidate, target, captions}} entries, " \
                                              "not a number."
    assert "not nothing (null)" in _refused(None, FASHIONIQ_CAPTIONS)
    assert "row 3: field 'text1'" in _refused([CATALOG_ROW, {**CATALOG_ROW, "text1": " "}], CATALOG_TRIPLETS)


def test_a_string_of_captions_in_a_real_layout_is_never_split_into_letters(tiny_catalogue: Path, tmp_path: Path):
    root = tmp_path / "fiq"
    root.mkdir()
    for sub in ("images", "image_splits", "captions"):
        (root / sub).symlink_to(tiny_catalogue / sub) if sub != "captions" else (root / sub).mkdir(parents=True)
    entries = json.loads((tiny_catalogue / "captions" / "cap.dress.val.json").read_text())
    entries[2]["captions"] = "is red"
    (root / "captions" / "cap.dress.val.json").write_text(json.dumps(entries))
    with pytest.raises(PipelineError, match=r"cap.dress.val.json entry 2: field 'captions' is not allowed"):
        FashionIQ(root, ["dress"]).pairs("val")
    for bad in ("5", "null", "{\"candidate\": 1}"):
        (root / "captions" / "cap.dress.val.json").write_text(bad)
        with pytest.raises(PipelineError, match="cap.dress.val.json must be a list"):
            FashionIQ(root, ["dress"]).pairs("val")
