import hashlib
import json

import numpy as np

from pipeline.captioning.attributes import CATEGORIES, attributes_from_tags
from pipeline.data.synthetic.annotate import relative_captions
from pipeline.data.synthetic.synthesize import generate, mutate, random_attributes, write_catalogue
from tests.conftest import TINY


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path, tiny_catalogue):
    write_catalogue(tmp_path / "again", TINY, seed=0, workers=2)
    write_catalogue(tmp_path / "other", TINY, seed=1, workers=1)
    assert _digest(tmp_path / "again") == _digest(tiny_catalogue)
    assert _digest(tmp_path / "other") != _digest(tiny_catalogue)


def test_layout_is_fashioniq(tiny_catalogue):
    for category in CATEGORIES:
        for split in ("train", "val"):
            pairs = json.loads((tiny_catalogue / "captions" / f"cap.{category}.{split}.json").read_text())
            names = json.loads((tiny_catalogue / "image_splits" / f"split.{category}.{split}.json").read_text())
            tags = json.loads((tiny_catalogue / "tags" / f"asin2attr.{category}.{split}.json").read_text())
            assert set(tags) == set(names)
            assert all((tiny_catalogue / "images" / f"{n}.png").is_file() for n in names)
            for pair in pairs:
                assert set(pair) == {"candidate", "target", "captions"}
                assert pair["candidate"] in names and pair["target"] in names
                assert len(pair["captions"]) == 2 and all(pair["captions"])
                assert all(len(group) == 5 or group == [] for group in [tags[pair["target"]]])


def test_pairs_differ_in_one_to_three_attributes(tiny_catalogue):
    images, pairs = generate(TINY, seed=3)
    by_name = {im.name: im.attributes for im in images}
    for pair in pairs:
        n = len(by_name[pair.reference].changed_fields(by_name[pair.target]))
        assert 1 <= n <= 4  # up to three changes; a pattern change also changes the accent colour


def test_val_gallery_has_distractors():
    images, pairs = generate(TINY, seed=0)
    val = [im for im in images if im.split == "val" and im.category == "dress"]
    assert len(val) == TINY.families_val * TINY.family_size + TINY.distractors_val
    assert sum(p.split == "val" and p.category == "dress" for p in pairs) == TINY.families_val * (TINY.family_size - 1)


def test_relative_captions_mention_each_change():
    rng = np.random.default_rng(0)
    for _ in range(200):
        base = random_attributes("dress", rng)
        other = mutate(base, rng)
        captions = relative_captions(base, other, rng)
        assert len(captions) == 2 and all(c.strip() for c in captions)
        if base.color != other.color and "pattern" not in base.changed_fields(other):
            text = " ".join(captions)
            assert other.color in text or "darker" in text or "lighter" in text


def test_tags_recover_attributes(tiny_catalogue):
    images, _ = generate(TINY, seed=0)
    tags = json.loads((tiny_catalogue / "tags" / "asin2attr.shirt.train.json").read_text())
    for image in images:
        if image.category == "shirt" and image.split == "train":
            words = [w for g in tags[image.name] for w in g if w]
            assert attributes_from_tags("shirt", words) == image.attributes
